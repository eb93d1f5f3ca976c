package client

import (
	"fmt"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// chunksOf returns n chunk references of size bytes, named after seed.
func chunksOf(seed string, n int, size uint32) []castore.ChunkRef {
	out := make([]castore.ChunkRef, n)
	for i := range out {
		out[i] = castore.ChunkRef{Digest: castore.Hash(fmt.Appendf(nil, "%s-%d", seed, i)), Size: size}
	}
	return out
}

func TestPlanFrames(t *testing.T) {
	const mib = 1 << 20
	big := chunksOf("big", 40, mib)           // 40 MiB, every chunk new
	bigOld := chunksOf("big-old", 40, mib)    // its previous version
	small := chunksOf("small", 1, 1000)       // new, no previous version
	text := chunksOf("text", 2, 30000)        // new
	textOld := chunksOf("text-old", 2, 30000) // previous version
	same := chunksOf("same", 3, 64<<10)       // unchanged: in base too
	loose := chunksOf("loose", 50, mib)       // in no file
	files := []fileChunks{
		{path: "bin/big", size: 40 * mib, chunks: big},
		{path: "small", size: 1000, chunks: small},
		{path: "doc/text", size: 60000, chunks: text},
		{path: "same", size: 3 * 64 << 10, chunks: same},
	}
	base := map[string]fileChunks{
		"bin/big":  {path: "bin/big", size: 40 * mib, chunks: bigOld},
		"doc/text": {path: "doc/text", size: 60000, chunks: textOld},
		"same":     {path: "same", size: 3 * 64 << 10, chunks: same},
	}
	var send []castore.ChunkRef
	send = append(send, loose[:2]...)
	send = append(send, text...)
	send = append(send, big...)
	send = append(send, small...)
	send = append(send, loose[2:]...)
	send = append(send, text[0]) // twice: sent once

	frames := planFrames(files, send, base, func(r castore.ChunkRef) bool { return r != bigOld[39] })

	seen := map[castore.Digest]bool{}
	var order []castore.ChunkRef
	for i, f := range frames {
		var dictBytesSum int64
		for _, r := range f.dict {
			dictBytesSum += int64(r.Size)
			if r == bigOld[39] {
				t.Errorf("frame %d: dictionary holds a chunk not usable", i)
			}
		}
		if dictBytesSum > dictBytes {
			t.Errorf("frame %d: dictionary of %d bytes", i, dictBytesSum)
		}
		if len(f.dict) > 0 && f.bytes() > frameBytes {
			t.Errorf("frame %d: %d bytes after a dictionary", i, f.bytes())
		}
		if f.bytes() > readBatchBytes {
			t.Errorf("frame %d: %d bytes", i, f.bytes())
		}
		for _, r := range f.chunks {
			if seen[r.Digest] {
				t.Errorf("chunk %s in two frames", r.Digest)
			}
			seen[r.Digest] = true
			order = append(order, r)
		}
	}
	if len(order) != len(send)-1 {
		t.Fatalf("%d chunks in frames, want %d", len(order), len(send)-1)
	}
	// Files first, in files' order: big (3 frames of at most 16 MiB, each
	// with the previous version around the same place), then text (one
	// frame, textOld as dictionary); small and the loose chunks without.
	if len(frames) < 5 {
		t.Fatalf("%d frames", len(frames))
	}
	for i, wantFirst := range []castore.ChunkRef{big[0], big[16], big[32]} {
		f := frames[i]
		if f.chunks[0] != wantFirst || len(f.dict) == 0 {
			t.Fatalf("frame %d: %d chunks from %s, dictionary of %d", i, len(f.chunks), f.chunks[0].Digest, len(f.dict))
		}
	}
	// The middle frame (big[16:32], 40% to 80% of the file) gets the
	// previous version's chunks around 60%: 16 MiB from 16 MiB on.
	if d := frames[1].dict; d[0] != bigOld[16] || len(d) != 16 {
		t.Errorf("middle frame's dictionary: %d chunks from %s", len(d), d[0].Digest)
	}
	if f := frames[3]; f.chunks[0] != text[0] || len(f.dict) != 2 || f.dict[0] != textOld[0] {
		t.Errorf("frame 3: %+v", f)
	}
	for _, f := range frames[4:] {
		if len(f.dict) > 0 {
			t.Errorf("a frame of chunks without previous version has a dictionary")
		}
	}
}
