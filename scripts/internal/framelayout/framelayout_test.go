package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/client"
)

func TestRawFrameDecodes(t *testing.T) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, rawBlockMax - 1, rawBlockMax, rawBlockMax + 1, 1<<20 + 5} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		obj := rawFrame(nil, data)
		if len(obj) != rawFrameSize(n) {
			t.Errorf("%d bytes: frame of %d bytes, rawFrameSize says %d", n, len(obj), rawFrameSize(n))
		}
		got, err := dec.DecodeAll(obj, nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%d bytes: decoded to %d other bytes", n, len(got))
		}
		// The checksum is checked: a changed byte is an error.
		if n > 0 {
			obj[len(obj)-5] ^= 1
			if _, err := dec.DecodeAll(obj, nil); err == nil {
				t.Errorf("%d bytes: a damaged frame decoded", n)
			}
		}
	}
}

// testCorpus is a corpus of two NARs with chunks of the given sizes
// (NAR by NAR), each chunk its own file of random bytes; files whose
// first chunk is in elf start with the ELF magic number.
func testCorpus(nars [][]int, elf map[int]bool) *corpus {
	rng := rand.New(rand.NewPCG(5, 6))
	c := &corpus{}
	for _, sizes := range nars {
		var bytesIn int64
		for _, n := range sizes {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.IntN(4)) // compressible
			}
			if elf[len(c.chunks)] {
				copy(data, "\x7fELF")
			}
			c.files = append(c.files, fileRef{name: "f", head: data[:min(n, sniffLen)]})
			c.chunks = append(c.chunks, chunkRef{off: len(c.arena), size: n, file: int32(len(c.files) - 1)})
			c.arena = append(c.arena, data...)
			bytesIn += int64(n)
		}
		c.nars = append(c.nars, narRef{bytes: bytesIn, end: len(c.chunks)})
		c.narBytes += bytesIn
	}
	return c
}

func TestRunCutsFramesAsThePacker(t *testing.T) {
	const k = 1 << 10
	c := testCorpus([][]int{{40 * k, 40 * k, 40 * k, 10 * k}, {30 * k}}, nil)
	fixed := func(int) int { return 64 * k }
	r, err := c.run(strategy{name: "t", size: fixed})
	if err != nil {
		t.Fatal(err)
	}
	// 40+40 closes a frame (80 KiB >= 64 KiB), 40+10 is closed at the end
	// of the first NAR, 30 at the end of the second.
	if r.frames != 3 || r.maxDecoded != 80*k {
		t.Errorf("%d frames, largest %d bytes; want 3, %d", r.frames, r.maxDecoded, 80*k)
	}
	// Each chunk is a file: two files read 80 KiB each, two 50, one 30.
	if want := int64(2*80*k + 2*50*k + 30*k); r.fileReadBytes != want {
		t.Errorf("reading each file decodes %d bytes, want %d", r.fileReadBytes, want)
	}
	if r.largeFileBytes != 0 || r.largeFileReadBytes != 0 {
		t.Errorf("large files: %d bytes, %d decoded; there are none", r.largeFileBytes, r.largeFileReadBytes)
	}
	// One file of 1200 KiB and one of 400 KiB in 1 MiB frames: the first
	// fills a frame, the second the next.
	c = testCorpus([][]int{{400 * k, 400 * k, 400 * k, 400 * k}}, nil)
	for i := range c.chunks[:3] {
		c.chunks[i].file = 0
	}
	if r, err = c.run(strategy{name: "t", size: func(int) int { return 1 << 20 }}); err != nil {
		t.Fatal(err)
	}
	if r.largeFileBytes != 1200*k || r.largeFileReadBytes != 1200*k || r.fileReadBytes != 1600*k {
		t.Errorf("large files: %d bytes, %d decoded, all files %d decoded; want %d, %d, %d",
			r.largeFileBytes, r.largeFileReadBytes, r.fileReadBytes, 1200*k, 1200*k, 1600*k)
	}
	if r.stored <= 0 || r.stored >= c.narBytes {
		t.Errorf("stored %d bytes of %d", r.stored, c.narBytes)
	}
}

func TestRunClassesAndBudget(t *testing.T) {
	const k = 1 << 10
	// Chunks 0 and 2 are ELF files, 1 and 3 not: two open frames.
	c := testCorpus([][]int{{20 * k, 20 * k, 20 * k, 20 * k}}, map[int]bool{0: true, 2: true})
	byMagic := func(c *corpus, ch chunkRef) int { return int(fileClass(c.files[ch.file].head)) }
	s := strategy{name: "t", classOf: byMagic, className: func(k int) string { return class(k).String() },
		size: func(int) int { return 1 << 20 }}
	r, err := c.run(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.frames != 2 || r.maxOpen != 2 || r.classes[int(classELF)].decoded != 40*k {
		t.Errorf("%d frames, %d open at once, ELF frames %d bytes; want 2, 2, %d", r.frames, r.maxOpen, r.classes[int(classELF)].decoded, 40*k)
	}
	// With at most 30 KiB open: the second chunk packs the fullest frame
	// (of two equal, the first class: other), the third the ELF frame of
	// two chunks, the end of the NAR the last chunk.
	s.budget = 30 * k
	if r, err = c.run(s); err != nil {
		t.Fatal(err)
	}
	if r.frames != 3 || r.classes[int(classOther)].frames != 2 || r.classes[int(classELF)].frames != 1 || r.maxOpenBytes > 40*k {
		t.Errorf("with a budget: %d frames (%d other, %d ELF), at most %d bytes open; want 3 (2, 1), at most %d",
			r.frames, r.classes[int(classOther)].frames, r.classes[int(classELF)].frames, r.maxOpenBytes, 40*k)
	}
}

func TestReadCorpusKeepsEachChunkOnce(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	big := make([]byte, 600<<10) // several chunks
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	write := func(path string, data []byte) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "a", "bin", "tool"), append([]byte("\x7fELF"), big...))
	write(filepath.Join(dir, "a", "doc.txt"), []byte("hello\n"))
	write(filepath.Join(dir, "b", "bin", "tool"), append([]byte("\x7fELF"), big...)) // the same
	write(filepath.Join(dir, "b", "doc.txt"), []byte("hello again\n"))
	var nars []string
	for _, name := range []string{"a", "b"} {
		nar := filepath.Join(dir, name+".nar")
		r := client.DumpReader(filepath.Join(dir, name))
		f, err := os.Create(nar)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(f, r)
		r.Close()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		nars = append(nars, nar)
	}
	c, err := readCorpus(nars)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.arena) != len(big)+4+len("hello\n")+len("hello again\n") {
		t.Errorf("%d distinct chunk bytes, want %d", len(c.arena), len(big)+4+len("hello\n")+len("hello again\n"))
	}
	if len(c.nars) != 2 || c.nars[1].end != c.nars[0].end+1 {
		t.Errorf("NARs %+v: want the second to bring one new chunk", c.nars)
	}
	var fileOffs []int64
	for _, ch := range c.chunks {
		f := c.files[ch.file]
		if f.name == "bin/tool" {
			if fileClass(f.head) != classELF {
				t.Errorf("bin/tool is %v, want elf", fileClass(f.head))
			}
			fileOffs = append(fileOffs, ch.fileOff)
		}
	}
	if len(fileOffs) < 2 || fileOffs[0] != 0 || fileOffs[1] <= 0 {
		t.Errorf("bin/tool's chunks at offsets %v", fileOffs)
	}
}
