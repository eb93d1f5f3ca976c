package main

import (
	"bytes"
	"cmp"
	"fmt"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/internal/callfilter"
)

// A strategy lays new chunks into frames.
type strategy struct {
	name string
	// classOf gives a chunk's class; nil puts every chunk in one frame
	// (class 0), in ingest order.
	classOf func(c *corpus, ch chunkRef) int
	// className names a class in the per-class table.
	className func(int) string
	// size is the frame size of a class: frames close once they hold at
	// least this many bytes.
	size func(class int) int
	// raw says which classes are stored uncompressed.
	raw func(class int) bool
	// opts are zstd encoder options on top of the store's.
	opts []zstd.EOption
	// noCRC leaves the content checksum out.
	noCRC bool
	// filter says which classes' frames go through the x86 call filter
	// (package callfilter) before zstd, and back after.
	filter func(class int) bool
	// budget, when set, bounds the bytes in open frames: past it, the
	// fullest open frame is packed.
	budget int
	// reorder, when set, gives the order of one NAR's new chunks and the
	// bytes of them it needs at hand before the first can be packed.
	reorder func(c *corpus, chunks []chunkRef) (order []chunkRef, held int)
}

// classTotals are what a strategy did with one class.
type classTotals struct {
	frames          int
	decoded, stored int64
}

// result is what a strategy stored and what it cost.
type result struct {
	s           strategy
	frames      int
	stored      int64
	zstdCPU     time.Duration // compressing, and writing raw frames
	classifyCPU time.Duration
	decodeCPU   time.Duration // decoding every frame once
	// chunkReadCPU is, summed over the chunks, the CPU of decoding the
	// chunk's frame: divided by the chunk count, the mean cost of a first
	// read of a chunk.
	chunkReadCPU time.Duration
	maxDecoded   int // the largest frame
	maxOpen      int // the most frames open at once
	// fileReadBytes is, summed over the files, the decoded bytes of the
	// frames holding the file's new chunks: what reading every file on
	// its own, with nothing cached, decodes.
	fileReadBytes int64
	// largeFileReadBytes is the same over the files with at least
	// largeFile new bytes, largeFileBytes their new bytes.
	largeFileReadBytes, largeFileBytes int64
	// maxOpenBytes is the most bytes in open frames at once, or held for
	// reordering.
	maxOpenBytes int
	classes      map[int]*classTotals
}

// largeFile is the least new bytes of a file counted as large.
const largeFile = 1 << 20

// storeWindow is the window the store's packer gives a frame of n bytes:
// 1 MiB, doubled until it covers the frame, at most 8 MiB.
func storeWindow(n int) int {
	w := 1 << 20
	for w < n && w < 8<<20 {
		w <<= 1
	}
	return w
}

// run lays the corpus's chunks into frames as s says, on one locked
// thread so that its CPU time is its own.
func (c *corpus) run(s strategy) (*result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	encs := map[int]*zstd.Encoder{}
	encoder := func(n int) (*zstd.Encoder, error) {
		w := storeWindow(n)
		if e := encs[w]; e != nil {
			return e, nil
		}
		opts := append([]zstd.EOption{
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(!s.noCRC),
			zstd.WithWindowSize(w),
		}, s.opts...)
		e, err := zstd.NewWriter(nil, opts...)
		encs[w] = e
		return e, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, err
	}
	defer dec.Close()

	res := &result{s: s, classes: map[int]*classTotals{}}
	type openFrame struct {
		data   []byte
		chunks int
		files  []int32 // the file of each chunk
	}
	// frameBytes[i] is the size of frame i decoded; fileFrames the frames
	// holding each file's new chunks.
	var frameBytes []int
	fileFrames := map[int32][]int32{}
	open := map[int]*openFrame{}
	openBytes, busy := 0, 0 // in open frames, frames holding chunks
	var obj, back, filtered []byte
	emit := func(k int) error {
		f := open[k]
		if f == nil || len(f.data) == 0 {
			return nil
		}
		raw := s.raw != nil && s.raw(k)
		filter := s.filter != nil && s.filter(k)
		t0 := threadCPU()
		in := f.data
		if filter {
			filtered = append(filtered[:0], f.data...)
			callfilter.Encode(filtered)
			in = filtered
		}
		if raw {
			obj = rawFrame(obj[:0], in)
		} else {
			e, err := encoder(len(in))
			if err != nil {
				return err
			}
			obj = e.EncodeAll(in, obj[:0])
		}
		t1 := threadCPU()
		back, err = dec.DecodeAll(obj, back[:0])
		if filter && err == nil {
			callfilter.Decode(back)
		}
		t2 := threadCPU()
		if err != nil {
			return fmt.Errorf("%s: decoding a frame: %w", s.name, err)
		}
		if !bytes.Equal(back, f.data) {
			return fmt.Errorf("%s: a frame decodes to other bytes", s.name)
		}
		res.zstdCPU += t1 - t0
		res.decodeCPU += t2 - t1
		res.chunkReadCPU += (t2 - t1) * time.Duration(f.chunks)
		for _, file := range f.files {
			ff := fileFrames[file]
			if n := len(ff); n == 0 || ff[n-1] != int32(res.frames) {
				fileFrames[file] = append(ff, int32(res.frames))
			}
		}
		frameBytes = append(frameBytes, len(f.data))
		res.frames++
		res.stored += int64(len(obj))
		res.maxDecoded = max(res.maxDecoded, len(f.data))
		ct := res.classes[k]
		if ct == nil {
			ct = &classTotals{}
			res.classes[k] = ct
		}
		ct.frames++
		ct.decoded += int64(len(f.data))
		ct.stored += int64(len(obj))
		openBytes -= len(f.data)
		busy--
		f.data, f.chunks, f.files = f.data[:0], 0, f.files[:0]
		return nil
	}
	start := 0
	for _, nar := range c.nars {
		chunks := c.chunks[start:nar.end]
		if s.reorder != nil {
			var held int
			chunks, held = s.reorder(c, chunks)
			res.maxOpenBytes = max(res.maxOpenBytes, held)
		}
		for _, ch := range chunks {
			k := 0
			if s.classOf != nil {
				t0 := threadCPU()
				k = s.classOf(c, ch)
				res.classifyCPU += threadCPU() - t0
			}
			f := open[k]
			if f == nil {
				f = &openFrame{data: make([]byte, 0, s.size(k)+256<<10)}
				open[k] = f
			}
			f.data = append(f.data, c.data(ch)...)
			f.chunks++
			f.files = append(f.files, ch.file)
			openBytes += ch.size
			if len(f.data) == ch.size {
				busy++
			}
			res.maxOpen = max(res.maxOpen, busy)
			res.maxOpenBytes = max(res.maxOpenBytes, openBytes)
			if len(f.data) >= s.size(k) {
				if err := emit(k); err != nil {
					return nil, err
				}
			}
			for s.budget > 0 && openBytes > s.budget {
				fullest, n := 0, -1
				for k, g := range open {
					if len(g.data) > n || len(g.data) == n && k < fullest {
						fullest, n = k, len(g.data)
					}
				}
				if err := emit(fullest); err != nil {
					return nil, err
				}
			}
		}
		start = nar.end
		// The end of an ingest: every open frame is packed.
		keys := make([]int, 0, len(open))
		for k := range open {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := emit(k); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range encs {
		e.Close()
	}
	// A file's frames, each counted once: its chunks can come back to an
	// open frame after going to others.
	fileBytes := map[int32]int64{}
	for _, ch := range c.chunks {
		fileBytes[ch.file] += int64(ch.size)
	}
	for file, ff := range fileFrames {
		slices.Sort(ff)
		var touched int64
		for _, fr := range slices.Compact(ff) {
			touched += int64(frameBytes[fr])
		}
		res.fileReadBytes += touched
		if fileBytes[file] >= largeFile {
			res.largeFileReadBytes += touched
			res.largeFileBytes += fileBytes[file]
		}
	}
	return res, nil
}

// strategies are the layouts measured, in the order of the table.
func strategies() []strategy {
	const mib = 1 << 20
	fixed := func(n int) func(int) int { return func(int) int { return n } }
	names := func(k int) string { return class(k).String() }
	byMagic := func(c *corpus, ch chunkRef) int { return int(fileClass(c.files[ch.file].head)) }
	byName := func(c *corpus, ch chunkRef) int {
		f := c.files[ch.file]
		return int(nameClass(f.name, f.head))
	}
	byChunk := func(c *corpus, ch chunkRef) int { return int(chunkClass(c.data(ch))) }
	rawPacked := func(k int) bool { return class(k) == classPacked }
	textBig := func(small, big int) func(int) int {
		return func(k int) int {
			if class(k) == classText || class(k) == classGo {
				return big
			}
			return small
		}
	}
	var out []strategy
	for _, n := range []int{1, 2, 4, 8} {
		out = append(out, strategy{name: "ingest", size: fixed(n * mib)})
	}
	out = append(out,
		strategy{name: "ingest, no checksum", size: fixed(mib), noCRC: true},
		strategy{name: "ingest, lower encoder memory", size: fixed(mib), opts: []zstd.EOption{zstd.WithLowerEncoderMem(true)}},
		strategy{name: "ingest, literals always entropy-coded", size: fixed(mib), opts: []zstd.EOption{zstd.WithAllLitEntropyCompression(true)}},
		strategy{name: "ingest, literals never entropy-coded", size: fixed(mib), opts: []zstd.EOption{zstd.WithAllLitEntropyCompression(false)}},
	)
	for _, n := range []int{1, 2} {
		out = append(out,
			strategy{name: "magic", classOf: byMagic, className: names, size: fixed(n * mib)},
			strategy{name: "name", classOf: byName, className: names, size: fixed(n * mib)},
			strategy{name: "chunk", classOf: byChunk, className: names, size: fixed(n * mib)},
			strategy{name: "ext", classOf: byExt, className: extName, size: fixed(n * mib)},
		)
	}
	out = append(out,
		strategy{name: "ingest, packed chunks raw", classOf: byChunkPacked, className: names, size: fixed(mib), raw: rawPacked},
		strategy{name: "magic, packed raw", classOf: byMagic, className: names, size: fixed(mib), raw: rawPacked},
		strategy{name: "chunk, packed raw", classOf: byChunk, className: names, size: fixed(mib), raw: rawPacked},
		strategy{name: "magic, text 4 MiB", classOf: byMagic, className: names, size: textBig(mib, 4*mib)},
		strategy{name: "name, text 4 MiB", classOf: byName, className: names, size: textBig(mib, 4*mib)},
		strategy{name: "name, text 4 MiB, packed raw", classOf: byName, className: names, size: textBig(mib, 4*mib), raw: rawPacked},
		strategy{name: "magic, text 4 MiB, packed raw", classOf: byMagic, className: names, size: textBig(mib, 4*mib), raw: rawPacked},
	)
	isELF := func(k int) bool { return class(k) == classELF }
	all := func(int) bool { return true }
	out = append(out,
		strategy{name: "ingest, x86 filter", size: fixed(mib), filter: all},
		strategy{name: "ingest, x86 filter", size: fixed(2 * mib), filter: all},
		strategy{name: "magic, x86 filter on elf", classOf: byMagic, className: names, size: fixed(mib), filter: isELF},
		strategy{name: "magic, elf striped by offset", classOf: byMagic, className: names, size: fixed(mib), reorder: stripeELF},
		strategy{name: "magic, elf striped by offset, x86 filter", classOf: byMagic, className: names, size: fixed(mib), reorder: stripeELF, filter: isELF},
	)
	for _, b := range []int64{64 << 10, 256 << 10, 1 << 20} {
		out = append(out,
			strategy{name: fmt.Sprintf("elf in %d KiB offset bands", b>>10), classOf: bands(b), className: bandName, size: fixed(mib)},
			strategy{name: fmt.Sprintf("elf in %d KiB offset bands, x86 filter", b>>10), classOf: bands(b), className: bandName, size: fixed(mib), filter: isBand},
		)
	}
	for _, budget := range []int{8, 16, 32} {
		out = append(out,
			strategy{name: fmt.Sprintf("elf in 256 KiB offset bands, at most %d MiB open", budget), classOf: bands(256 << 10), className: bandName, size: fixed(mib), budget: budget * mib},
			strategy{name: fmt.Sprintf("elf in 256 KiB offset bands, at most %d MiB open, x86 filter", budget), classOf: bands(256 << 10), className: bandName, size: fixed(mib), budget: budget * mib, filter: isBand},
		)
	}
	out = append(out,
		strategy{name: "elf in 128 KiB offset bands, at most 16 MiB open", classOf: bands(128 << 10), className: bandName, size: fixed(mib), budget: 16 * mib},
		strategy{name: "elf in 512 KiB offset bands, at most 16 MiB open, 2 MiB frames", classOf: bands(512 << 10), className: bandName, size: fixed(2 * mib), budget: 16 * mib},
		strategy{name: "elf in 256 KiB offset bands, at most 16 MiB open", classOf: bands(256 << 10), className: bandName, size: fixed(2 * mib), budget: 16 * mib},
		strategy{name: "magic, elf striped by offset", classOf: byMagic, className: names, size: fixed(2 * mib), reorder: stripeELF},
		strategy{name: "magic, elf striped by offset, x86 filter", classOf: byMagic, className: names, size: fixed(2 * mib), reorder: stripeELF, filter: isELF},
	)
	return out
}

// stripeELF puts one NAR's new chunks of ELF files (fileClass) after the
// others, sorted by their offset in their file (files in NAR order at one
// offset), so that the same part of every binary (the runtime at the
// start of each Go binary's code, say) lands in one frame. It needs every
// new ELF chunk of the NAR before the first is packed.
func stripeELF(c *corpus, chunks []chunkRef) ([]chunkRef, int) {
	var rest, elf []chunkRef
	held := 0
	for _, ch := range chunks {
		if fileClass(c.files[ch.file].head) == classELF {
			elf = append(elf, ch)
			held += ch.size
		} else {
			rest = append(rest, ch)
		}
	}
	slices.SortStableFunc(elf, func(a, b chunkRef) int { return cmp.Compare(a.fileOff, b.fileOff) })
	return append(rest, elf...), held
}

// Offset bands: bands(size) gives the chunks of ELF files a class per
// size bytes of offset in the file, with an open frame each: a streaming
// approximation of stripeELF, its memory the open frames.
const bandFirst = int(numClasses) // the class of the first band

func bands(size int64) func(c *corpus, ch chunkRef) int {
	return func(c *corpus, ch chunkRef) int {
		k := fileClass(c.files[ch.file].head)
		if k != classELF {
			return int(k)
		}
		return bandFirst + int(ch.fileOff/size)
	}
}

func isBand(k int) bool { return k >= bandFirst }

func bandName(k int) string {
	if k < bandFirst {
		return class(k).String()
	}
	return fmt.Sprintf("elf band %d", k-bandFirst)
}

// byChunkPacked keeps ingest order but for chunks that chunkClass finds
// packed, which go to frames of their own.
func byChunkPacked(c *corpus, ch chunkRef) int {
	if chunkClass(c.data(ch)) == classPacked {
		return int(classPacked)
	}
	return int(classOther)
}

// exts numbers file name extensions for byExt, on first sight.
var (
	exts     = map[string]int{}
	extNames []string
	extMu    sync.Mutex
)

// byExt gives each file name extension (lower case; "" for none; ELF
// files apart) a class of its own.
func byExt(c *corpus, ch chunkRef) int {
	f := c.files[ch.file]
	ext := strings.ToLower(path.Ext(f.name))
	if bytes.HasPrefix(f.head, []byte("\x7fELF")) {
		ext = "(elf)"
	}
	extMu.Lock()
	defer extMu.Unlock()
	k, ok := exts[ext]
	if !ok {
		k = len(extNames)
		exts[ext] = k
		extNames = append(extNames, ext)
	}
	return k
}

func extName(k int) string {
	extMu.Lock()
	defer extMu.Unlock()
	return extNames[k]
}
