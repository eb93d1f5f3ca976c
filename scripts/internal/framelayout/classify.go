package main

import (
	"bytes"
	"math"
	"path"
	"strings"
)

// A class is what a strategy keeps one open frame for.
type class uint8

// The classes the class functions below give.
const (
	classOther  class = iota // none of the others
	classELF                 // an ELF file (executables, shared objects, object files)
	classText                // text: source, scripts, documents
	classGo                  // Go source (.go), a kind of text of its own
	classPacked              // already compressed: archives, images
	numClasses
)

var classNames = [numClasses]string{"other", "elf", "text", "go", "packed"}

func (c class) String() string { return classNames[c] }

// sniffLen is how many bytes of a file or chunk the content tests look at.
const sniffLen = 1024

// packedMagics start files that are already compressed.
var packedMagics = [][]byte{
	{0x1f, 0x8b},                       // gzip
	[]byte("PK\x03\x04"),               // zip, jar
	[]byte("\x89PNG"),                  // png
	{0xff, 0xd8, 0xff},                 // jpeg
	[]byte("GIF8"),                     // gif
	[]byte("BZh"),                      // bzip2
	{0xfd, '7', 'z', 'X', 'Z', 0},      // xz
	{0x28, 0xb5, 0x2f, 0xfd},           // zstd
	{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c}, // 7z
	[]byte("wOF2"),                     // woff2
}

// fileClass is the class of a file from its first bytes alone: ELF by its
// magic number, packed by a compressed format's magic number, text when
// its first sniffLen bytes are all text bytes, else other.
func fileClass(head []byte) class {
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return classELF
	case hasPackedMagic(head):
		return classPacked
	case isText(head):
		return classText
	}
	return classOther
}

func hasPackedMagic(head []byte) bool {
	for _, m := range packedMagics {
		if bytes.HasPrefix(head, m) {
			return true
		}
	}
	return false
}

// isText says whether the first sniffLen bytes of b hold no control byte
// but tab, newline, vertical tab, form feed, carriage return and escape
// (bytes from 0x80 up pass: UTF-8 and Latin-1 text).
func isText(b []byte) bool {
	if len(b) > sniffLen {
		b = b[:sniffLen]
	}
	for _, c := range b {
		if c < 0x20 && (c < '\t' || c > '\r') && c != 0x1b || c == 0x7f {
			return false
		}
	}
	return true
}

// textExts and packedExts are the file name extensions nameClass knows.
var (
	textExts = set(".s", ".txt", ".html", ".htm", ".md", ".json", ".xml", ".csv", ".js", ".css",
		".c", ".h", ".cc", ".cpp", ".py", ".pl", ".sh", ".bash", ".rc", ".bat", ".y", ".mod", ".sum",
		".golden", ".out", ".tmpl", ".tpl", ".pem", ".proto", ".yaml", ".yml", ".toml", ".in",
		".svg", ".asm", ".map", ".pc", ".la", ".1", ".3", ".5", ".8", ".texi", ".info", ".el", ".nix", ".rs")
	packedExts = set(".gz", ".tgz", ".zip", ".jar", ".png", ".jpg", ".jpeg", ".gif", ".bz2", ".xz",
		".zst", ".7z", ".woff", ".woff2", ".ico", ".webp", ".br", ".lz4", ".z")
)

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// nameClass is the class of a file from its name, its first bytes telling
// ELF files apart (executables have no extension): go for .go, text and
// packed by the extension lists above, else fileClass's ELF or other.
func nameClass(name string, head []byte) class {
	ext := strings.ToLower(path.Ext(name))
	switch {
	case ext == ".go":
		return classGo
	case textExts[ext]:
		return classText
	case packedExts[ext]:
		return classPacked
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return classELF
	}
	return classOther
}

// chunkClass is the class of a chunk from its own bytes, with nothing of
// its file: text when its first sniffLen bytes are text (isText), packed
// when the byte entropy of its first entropySample bytes is at least
// denseBits bits a byte, else other.
func chunkClass(data []byte) class {
	if isText(data) {
		return classText
	}
	if byteEntropy(data) >= denseBits {
		return classPacked
	}
	return classOther
}

const (
	entropySample = 8 << 10
	denseBits     = 7.5
)

// byteEntropy is the order-0 entropy, in bits a byte, of the first
// entropySample bytes of b.
func byteEntropy(b []byte) float64 {
	if len(b) > entropySample {
		b = b[:entropySample]
	}
	if len(b) == 0 {
		return 0
	}
	var hist [256]int
	for _, c := range b {
		hist[c]++
	}
	n := float64(len(b))
	h := 0.0
	for _, k := range hist {
		if k > 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
