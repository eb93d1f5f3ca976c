package testtree

import (
	"fmt"
	"strings"
)

// EdgeCases returns the catalogue of awkward trees, each small enough (a few
// MiB at most) to be built and round-tripped in every test run. Names are
// unique and safe to use as subtest and file names.
//
// All trees except "long-path" can be dumped by `nix-store --dump` when
// built under a short directory (see [Node.FitsPathMax]); "long-path" has a
// path longer than PATH_MAX, which Nix cannot read, so its reference NAR
// must come from [WriteNAR].
func EdgeCases() []Tree {
	return []Tree{
		{"unicode-names", unicodeNames()},
		{"invalid-utf8-names", invalidUTF8Names()},
		{"long-names", longNames()},
		{"deep", deep(60)},
		{"long-path", longPath()},
		{"empty-dir", Dir(nil)},
		{"empty-files-and-dirs", emptyFilesAndDirs()},
		{"symlinks", symlinks()},
		{"executables", executables()},
		{"padding-sizes", paddingSizes()},
		{"chunk-sizes", chunkSizes()},
		{"many-files", manyFiles(3000)},
		{"package-like", packageLike()},
		{"dedup", Dedup().Root},
		{"root-file", File(Text("a single file as the root of the archive\n"))},
		{"root-file-chunked", File(Random(101, 700_001))},
		{"root-empty-file", File(Empty())},
		{"root-exec", Exec(Text("#!/bin/sh\necho hello\n"))},
		{"root-empty-exec", Exec(Empty())},
		{"root-symlink", Link("/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1/bin/hello")},
		{"root-symlink-unicode", Link("../日本語/😀 cafe\u0301")},
	}
}

// BigFileSize is the size of the large file in [Big]: 300 MiB plus a few
// bytes so the NAR needs padding after it.
const BigFileSize = 300<<20 + 5

// Big returns a tree holding one [BigFileSize] file of mixed compressible and
// random content next to a small file. Building it takes a few seconds and
// 300 MiB of disk; its content is generated while streaming.
func Big() Tree {
	return Tree{"big", Dir(Entries{
		"big.bin": File(Mixed(42, BigFileSize)),
		"README":  File(Text("a large file follows\n")),
	})}
}

// DedupBlobSize is the size of the file that [Dedup] repeats at several paths.
const DedupBlobSize = 300_000

// Dedup returns a tree with repeated content: one [DedupBlobSize] random file
// at four paths (one of them executable), five identical small files, and a
// 1 MiB random file next to a copy of itself with 20 bytes inserted in the
// middle. FileBytes counts every repeat; DistinctFileBytes counts each
// content once.
func Dedup() Tree {
	blob := Random(1, DedupBlobSize)
	base := Random(2, 1<<20)
	small := Text("the same small file at several paths\n")
	return Tree{"dedup", Dir(Entries{
		"a": Dir(Entries{"blob": File(blob)}),
		"b": Dir(Entries{
			"blob":   File(blob),
			"nested": Dir(Entries{"again": File(blob)}),
		}),
		"blob-exec":       Exec(blob),
		"small-1":         File(small),
		"small-2":         File(small),
		"small-3":         File(small),
		"sub":             Dir(Entries{"small-4": File(small), "small-5": File(small)}),
		"base.bin":        File(base),
		"base-edited.bin": File(Insert(base, 1<<19+7, []byte("20 bytes inserted!!!"))),
	})}
}

// text makes small distinct file content from a label.
func text(label string) Content { return Text("content of " + label + "\n") }

func unicodeNames() *Node {
	names := []string{
		// Same rendering, different bytes: NFC vs NFD, and three forms of Å.
		"caf\u00e9", "cafe\u0301", "\u00c5", "A\u030a", "\u212b",
		// Non-Latin scripts, including right-to-left and conjoining jamo.
		"日本語", "한국어", "\u1112\u1161\u11ab", "עברית", "العربية", "Ελληνικά",
		// Emoji, a ZWJ sequence and a flag with a variation selector.
		"😀", "👩\u200d👩\u200d👧", "🏳\ufe0f\u200d🌈",
		// These sort before the emoji in UTF-16 (the emoji start with the
		// surrogate 0xD83D) but after it when comparing UTF-8 bytes.
		"\ue000", "\uff61", "\ufffd",
		// Invisible and direction-changing characters.
		"\u200bzero-width", "\ufeffbom", "\u202eevil.txt",
		// Case and ASCII ordering.
		"README", "readme", "Readme", "B", "a.txt", "a-b", "a0", "a b", "ß", "ss",
		// Characters that are special to shells and escaping code.
		"tab\tname", "new\nline", "back\\slash", "quote\"s", "'single'",
		"-dash", ".hidden", "...", "*?[", "$HOME", "~tilde", "#hash", "%41",
		":colon", ";semi", "=eq", "a,b", "\x01ctl", "\x7fdel", " leading-space",
		"trailing-space ",
	}
	entries := Entries{}
	for _, name := range names {
		entries[name] = File(text(name))
	}
	// "a" is a directory so that "a" vs "a.txt"/"a-b"/"a0" ordering is
	// exercised between a directory and files.
	entries["a"] = Dir(Entries{"b": File(text("a/b"))})
	entries["ディレクトリ"] = Dir(Entries{
		"ファイル":       File(Text("ユニコードの内容\n")),
		"cafe\u0301": Link("../caf\u00e9"),
	})
	return Dir(entries)
}

func invalidUTF8Names() *Node {
	return Dir(Entries{
		"\xff":            File(text("ff")),
		"\xfe\xff":        File(text("fe ff")),
		"\xc3\x28":        File(text("bad continuation")),
		"\xed\xa0\x80":    File(text("encoded surrogate")),
		"\xc0\xaf":        File(text("overlong slash")),
		"ok\x80":          File(text("stray continuation byte")),
		"\x80dir":         Dir(Entries{"inner\xff": File(text("inner"))}),
		"link":            Link("\xff\xfe/target"),
		"plain-ascii.txt": File(text("ascii")),
	})
}

func longNames() *Node {
	ascii255 := strings.Repeat("n", MaxNameLen)
	euro255 := strings.Repeat("€", MaxNameLen/3) // 3 bytes each
	emoji255 := strings.Repeat("😀", 63) + "abc"  // 63*4 + 3
	return Dir(Entries{
		ascii255: File(text("ascii255")),
		euro255:  File(text("euro255")),
		emoji255: Exec(text("emoji255")),
		strings.Repeat("d", MaxNameLen): Dir(Entries{
			strings.Repeat("f", MaxNameLen): File(text("nested255")),
			strings.Repeat("l", MaxNameLen): Link(strings.Repeat("t", MaxNameLen)),
		}),
		strings.Repeat("n", MaxNameLen-1): File(text("254")),
	})
}

// deep returns a chain of nested directories with a file at every level
// and an empty directory, a file and a symlink back to the top at the bottom.
func deep(levels int) *Node {
	n := Dir(Entries{
		"bottom":      File(text("bottom")),
		"empty":       Dir(nil),
		"link-to-top": Link(strings.Repeat("../", levels)),
	})
	for i := levels; i >= 1; i-- {
		n = Dir(Entries{
			fmt.Sprintf("d%02d", i): n,
			fmt.Sprintf("f%02d", i): File(text(fmt.Sprintf("level %d", i))),
		})
	}
	return n
}

// longPath returns a tree whose deepest file has a path of about 4.6 KB,
// beyond PATH_MAX, made of 240-byte directory names and a 255-byte leaf.
func longPath() *Node {
	leaf := Dir(Entries{
		strings.Repeat("z", MaxNameLen): File(text("beyond PATH_MAX")),
		"short":                         Link("../" + strings.Repeat("y", 200)),
	})
	n := leaf
	for i := 18; i >= 1; i-- {
		name := fmt.Sprintf("%02d-", i) + strings.Repeat("p", 237)
		n = Dir(Entries{name: n})
	}
	return n
}

func emptyFilesAndDirs() *Node {
	return Dir(Entries{
		"empty-file": File(Empty()),
		"empty-dir":  Dir(nil),
		"chain":      Dir(Entries{"b": Dir(Entries{"c": Dir(Entries{"d": Dir(Entries{"e": Dir(nil)})})})}),
		"siblings":   Dir(Entries{"x": Dir(nil), "y": Dir(nil), "z": Dir(nil)}),
		"mixed": Dir(Entries{
			"empty":    File(Empty()),
			"empty2":   File(Empty()),
			"dir":      Dir(nil),
			"nonempty": File(text("mixed/nonempty")),
		}),
		"only-empty-file": Dir(Entries{"f": File(Empty())}),
	})
}

// longTarget returns a relative symlink target of exactly n bytes.
func longTarget(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "component-%04d/", i)
	}
	return b.String()[:n]
}

func symlinks() *Node {
	return Dir(Entries{
		"target-file": File(text("target-file")),
		"target-dir":  Dir(Entries{"inner": File(text("inner"))}),

		"abs":           Link("/nix/store/00000000000000000000000000000000-example/bin/example"),
		"abs-root":      Link("/"),
		"abs-slash-end": Link("/tmp/"),
		"dangling-abs":  Link("/nonexistent/path"),

		"rel-file":     Link("target-file"),
		"rel-dot-file": Link("./target-file"),
		"rel-dir":      Link("target-dir"),
		"rel-dir-end":  Link("target-dir/"),
		"rel-into-dir": Link("target-dir/inner"),
		"dangling":     Link("does/not/exist"),

		"dot":          Link("."),
		"dotdot":       Link(".."),
		"dotdot-out":   Link("../outside/the/tree"),
		"dotdot-many":  Link("../../../../../../../../etc/passwd"),
		"dotdot-mid":   Link("target-dir/../target-file"),
		"double-slash": Link("target-dir//inner"),

		"self":    Link("self"),
		"loop-a":  Link("loop-b"),
		"loop-b":  Link("loop-a"),
		"chain-1": Link("chain-2"),
		"chain-2": Link("chain-3"),
		"chain-3": Link("target-file"),

		"unicode":    Link("日本語/😀/cafe\u0301"),
		"whitespace": Link("a b/\tc\nd "),
		"long-4000":  Link(longTarget(4000)),
		// 4095 bytes is the longest target Linux stores (PATH_MAX - 1).
		"long-4095": Link(longTarget(4095)),

		"sub": Dir(Entries{
			"up":     Link("../target-file"),
			"up-dir": Link("../target-dir"),
			"upup":   Link("../../x/../y"),
		}),
		"only-links": Dir(Entries{"nowhere": Link("nowhere")}),
	})
}

func executables() *Node {
	script := Text("#!/bin/sh\necho hello\n")
	entries := Entries{
		"empty":      Exec(Empty()),
		"script":     Exec(script),
		"not-exec":   File(script), // same bytes, no executable bit
		"big-exec":   Exec(Random(201, 65537)),
		"nested":     Dir(Entries{"deeper": Dir(Entries{"run": Exec(text("nested/deeper/run"))})}),
		"empty-file": File(Empty()),
	}
	for size := 1; size <= 9; size++ {
		entries[fmt.Sprintf("exec-%d", size)] = Exec(Random(uint64(210+size), int64(size)))
	}
	return Dir(entries)
}

// paddingSizes covers every remainder modulo 8 around the NAR padding
// boundary, at small sizes and around a 4 KiB page.
func paddingSizes() *Node {
	var sizes []int64
	for s := int64(0); s <= 17; s++ {
		sizes = append(sizes, s)
	}
	sizes = append(sizes, 63, 64, 65, 4095, 4096, 4097)
	entries := Entries{}
	for _, s := range sizes {
		entries[fmt.Sprintf("size-%05d", s)] = File(Random(uint64(1000+s), s))
	}
	return Dir(entries)
}

// chunkSizes has files just below, at and above typical chunker limits
// (16 KiB minimum, 64 KiB average, 256 KiB maximum), plus a file spanning
// several maximal chunks, each with unrelated random content, and some
// compressible variants.
func chunkSizes() *Node {
	sizes := []int64{
		16383, 16384, 16385,
		65535, 65536, 65537,
		262143, 262144, 262145,
		1<<20 + 3,
	}
	entries := Entries{}
	for _, s := range sizes {
		entries[fmt.Sprintf("random-%07d", s)] = File(Random(uint64(2000+s), s))
	}
	entries["mixed-0262145"] = File(Mixed(3001, 262145))
	entries["mixed-1048579"] = File(Mixed(3002, 1<<20+3))
	entries["zeros-0262145"] = File(Bytes(make([]byte, 262145)))
	return Dir(entries)
}

// manyFiles returns a single directory with n small files; every third file
// shares its content with another.
func manyFiles(n int) *Node {
	entries := make(Entries, n)
	for i := range n {
		entries[fmt.Sprintf("file-%04d", i)] = File(Text(fmt.Sprintf("small file %d\n", i%(n/3+1))))
	}
	return Dir(entries)
}

// packageLike resembles a typical store path: binaries, versioned shared
// library symlinks, headers and documentation.
func packageLike() *Node {
	return Dir(Entries{
		"bin": Dir(Entries{
			"hello":  Exec(Random(301, 150_000)),
			"hi":     Link("hello"),
			"helper": Exec(Text("#!/nix/store/00000000000000000000000000000000-bash-5.2/bin/sh\nexec hello \"$@\"\n")),
		}),
		"lib": Dir(Entries{
			"libhello.so.1.2.3": Exec(Random(302, 90_000)),
			"libhello.so.1":     Link("libhello.so.1.2.3"),
			"libhello.so":       Link("libhello.so.1"),
			"pkgconfig":         Dir(Entries{"hello.pc": File(Text("prefix=/nix/store/x\nName: hello\n"))}),
		}),
		"include": Dir(Entries{"hello.h": File(Mixed(303, 20_000))}),
		"share": Dir(Entries{
			"doc": Dir(Entries{"hello": Dir(Entries{
				"README":  File(Mixed(304, 40_000)),
				"LICENSE": File(Mixed(305, 18_000)),
			})}),
			"man": Dir(Entries{"man1": Dir(Entries{"hello.1.gz": File(Random(306, 3_000))})}),
		}),
		"nix-support": Dir(Entries{"propagated-build-inputs": File(Empty())}),
	})
}
