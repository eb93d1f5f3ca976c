package store

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// VerifyOptions say how deep Verify looks and what it does about what it
// finds.
type VerifyOptions struct {
	// ReadData reads every stored chunk (through its frame, re-hashed) and
	// renders every path's NAR, checking its hash and size; without it
	// only the presence of every piece of every tree is checked.
	ReadData bool
	// Repair deletes the paths found broken, and the chunks found corrupt
	// (so that uploading them again stores them anew): afterwards no path
	// is served without all its data.
	Repair bool
	// Progress, when set, is called as work is done: phase "paths"
	// counts paths (NAR bytes with ReadData), then phase "chunks" (with
	// ReadData) counts uncompressed chunk bytes.
	Progress func(phase string, done, total int64)
}

// Kinds of Problem.
const (
	// ProblemIncomplete: a piece of the path's tree is missing.
	ProblemIncomplete = "incomplete"
	// ProblemCorrupt: a piece could not be read back as stored (a frame
	// or chunk that does not hash to its name, a record that does not
	// decode).
	ProblemCorrupt = "corrupt"
	// ProblemNARHash, ProblemNARSize: the NAR rendered does not have the
	// PathInfo's hash or size.
	ProblemNARHash = "narHash"
	ProblemNARSize = "narSize"
)

// Problem is one thing Verify found wrong.
type Problem struct {
	// Path is the store path's base name, or "" for a chunk (Digest).
	Path string `json:"path,omitempty"`
	// Digest is the chunk's digest, for a chunk problem.
	Digest string `json:"digest,omitempty"`
	// What is one of the Problem kinds.
	What string `json:"what"`
	// Detail names what was wrong: the piece, the frame, the digests.
	Detail string `json:"detail"`
}

// VerifyReport is what Verify found and did.
type VerifyReport struct {
	Paths      int    `json:"paths"`
	Chunks     uint64 `json:"chunks"`
	ChunkBytes uint64 `json:"chunkBytes"`
	NARBytes   uint64 `json:"narBytes"`
	ReadData   bool   `json:"readData"`
	// PathSeconds and ChunkSeconds time the two phases.
	PathSeconds  float64 `json:"pathSeconds"`
	ChunkSeconds float64 `json:"chunkSeconds"`
	// Problems lists path problems first (in store path digest order),
	// one per broken path, then chunk problems (in digest order).
	Problems []Problem `json:"problems"`
	// Broken lists the base names of the paths with a problem.
	Broken []string `json:"broken"`
	// Removed lists the paths Repair deleted; RemovedChunks counts the
	// corrupt chunks it deleted.
	Removed       []string `json:"removed"`
	RemovedChunks int      `json:"removedChunks"`
}

// OK reports whether nothing was found wrong.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// chunkDeleter removes a chunk; pebblestore.Store implements it.
type chunkDeleter interface {
	DeleteChunk(ctx context.Context, d castore.Digest) (bool, error)
}

// Verify checks that every PathInfo's tree is all in the castore and,
// with ReadData, that every NAR renders to its recorded hash and size,
// every chunk read on the way re-hashed, and then that every other stored
// chunk (those no path reached) reads back as the bytes its digest names.
// Rendering reads chunks in the order they were stored, frame by frame;
// the digests of the chunks it verified are held in memory (about 80
// bytes each) so that the second pass reads only the others. It returns
// an error only when it cannot go on (the index unreadable, ctx done);
// what is broken goes into the report. With Repair, the broken paths are
// deleted (their other data becomes garbage for a collection) and, when
// the castore can, the corrupt chunks. Meant for a store at rest or a
// quiet server.
func (x *Index) Verify(ctx context.Context, o VerifyOptions) (VerifyReport, error) {
	rep := VerifyReport{ReadData: o.ReadData, Problems: []Problem{}, Broken: []string{}, Removed: []string{}}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	start := time.Now()
	var total int64
	if err := x.List(ctx, func(p *PathInfo) error {
		if o.ReadData {
			total += int64(p.NARSize)
		} else {
			total++
		}
		return nil
	}); err != nil {
		return rep, fmt.Errorf("store: listing paths: %w", err)
	}
	verified := &verifiedChunks{Store: x.cas, ok: map[castore.Digest]struct{}{}}
	cas := castore.Store(verified)
	var broken []PathDigest
	var done int64
	h := sha256.New()
	err := x.List(ctx, func(p *PathInfo) error {
		rep.Paths++
		rep.NARBytes += p.NARSize
		what, detail, err := x.verifyPath(ctx, p, o.ReadData, cas, h)
		if err != nil {
			return err
		}
		if what != "" {
			rep.Problems = append(rep.Problems, Problem{Path: p.Path, What: what, Detail: detail})
			rep.Broken = append(rep.Broken, p.Path)
			broken = append(broken, p.Digest())
		}
		if o.ReadData {
			done += int64(p.NARSize)
		} else {
			done++
		}
		progress("paths", done, total)
		return nil
	})
	rep.PathSeconds = time.Since(start).Seconds()
	if err != nil {
		return rep, fmt.Errorf("store: verifying paths: %w", err)
	}

	start = time.Now()
	var bad []castore.Digest
	if scan, ok := x.cas.(ChunkScanner); ok && o.ReadData {
		var err error
		if bad, err = x.verifyOtherChunks(ctx, scan, verified, &rep, progress); err != nil {
			return rep, err
		}
	}
	rep.ChunkSeconds = time.Since(start).Seconds()
	if !o.Repair {
		return rep, nil
	}
	for i, d := range broken {
		ok, err := x.Delete(ctx, d)
		if err != nil {
			return rep, fmt.Errorf("store: repair: deleting %s: %w", rep.Broken[i], err)
		}
		if ok {
			rep.Removed = append(rep.Removed, rep.Broken[i])
		}
	}
	if del, ok := x.cas.(chunkDeleter); ok {
		for _, d := range bad {
			ok, err := del.DeleteChunk(ctx, d)
			if err != nil {
				return rep, fmt.Errorf("store: repair: deleting chunk %s: %w", d, err)
			}
			if ok {
				rep.RemovedChunks++
			}
		}
		if err := x.cas.Sync(ctx); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// chunkPlacer tells where a chunk is stored; pebblestore.Store has it.
type chunkPlacer interface {
	ChunkPlace(ctx context.Context, d castore.Digest) (castore.ChunkPlace, error)
}

// unverified is a chunk no render read, with where it is stored.
type unverified struct {
	d     castore.Digest
	size  int
	place castore.ChunkPlace
}

// verifyOtherChunks reads every stored chunk that verified has not, frame
// by frame when the castore tells where chunks are (so that each frame is
// decoded once), and reports those that do not read back right. It holds
// the chunks to read in memory (about 80 bytes each).
func (x *Index) verifyOtherChunks(ctx context.Context, scan ChunkScanner, verified *verifiedChunks, rep *VerifyReport, progress func(string, int64, int64)) ([]castore.Digest, error) {
	st, err := x.cas.Stats(ctx)
	if err != nil {
		return nil, err
	}
	placer, _ := x.cas.(chunkPlacer)
	var todo []unverified
	var done int64
	err = scan.ScanChunks(ctx, func(d castore.Digest, size int) error {
		rep.Chunks++
		rep.ChunkBytes += uint64(size)
		if verified.has(d) {
			done += int64(size)
			progress("chunks", done, int64(st.UniqueChunkBytes))
			return nil
		}
		u := unverified{d: d, size: size}
		if placer != nil {
			var err error
			if u.place, err = placer.ChunkPlace(ctx, d); err != nil && !errors.Is(err, castore.ErrNotFound) {
				return err
			}
		}
		todo = append(todo, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing every chunk: %w", err)
	}
	slices.SortFunc(todo, func(a, b unverified) int {
		if c := bytes.Compare(a.place.Frame[:], b.place.Frame[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.place.Offset, b.place.Offset)
	})
	var bad []castore.Digest
	var buf []byte
	first := len(rep.Problems)
	for _, u := range todo {
		buf, err = verified.GetChunk(ctx, u.d, buf[:0])
		switch {
		case err == nil && len(buf) != u.size:
			err = fmt.Errorf("%w: chunk %s: %d bytes, its record says %d", castore.ErrCorrupt, u.d, len(buf), u.size)
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		}
		if err != nil {
			bad = append(bad, u.d)
			rep.Problems = append(rep.Problems, Problem{Digest: u.d.String(), What: ProblemCorrupt, Detail: err.Error()})
		}
		done += int64(u.size)
		progress("chunks", done, int64(st.UniqueChunkBytes))
	}
	slices.SortFunc(bad, func(a, b castore.Digest) int { return bytes.Compare(a[:], b[:]) })
	slices.SortFunc(rep.Problems[first:], func(a, b Problem) int { return strings.Compare(a.Digest, b.Digest) })
	return bad, nil
}

// verifiedChunks re-hashes every chunk read through it, as
// castore.Verifying does, and remembers those that hashed right.
type verifiedChunks struct {
	castore.Store
	mu sync.Mutex
	ok map[castore.Digest]struct{}
}

// GetChunk implements castore.ChunkStore, failing with castore.ErrCorrupt
// on a mismatch.
func (v *verifiedChunks) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	start := len(dst)
	out, err := v.Store.GetChunk(ctx, d, dst)
	if err != nil {
		return out, err
	}
	if _, err := castore.VerifyChunk(d, out[start:]); err != nil {
		return dst, err
	}
	v.mu.Lock()
	v.ok[d] = struct{}{}
	v.mu.Unlock()
	return out, nil
}

func (v *verifiedChunks) has(d castore.Digest) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.ok[d]
	return ok
}

// verifyPath checks one path, returning the kind of problem and what it
// is ("" when the path is sound); err only when verifying cannot go on.
func (x *Index) verifyPath(ctx context.Context, p *PathInfo, read bool, cas castore.Store, h hash.Hash) (what, detail string, err error) {
	if err := CheckTree(ctx, x.cas, p.Root); err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		if errors.Is(err, ErrIncomplete) {
			return ProblemIncomplete, err.Error(), nil
		}
		return ProblemCorrupt, err.Error(), nil
	}
	if !read {
		return "", "", nil
	}
	h.Reset()
	n := &countingWriter{w: h}
	if err := narrender.Render(ctx, n, cas, p.Root); err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return ProblemCorrupt, "rendering the NAR: " + err.Error(), nil
	}
	if n.n != p.NARSize {
		return ProblemNARSize, fmt.Sprintf("the NAR renders to %d bytes, the PathInfo says %d", n.n, p.NARSize), nil
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if sum != p.NARSha256 {
		return ProblemNARHash, fmt.Sprintf("the NAR renders to sha256:%s, the PathInfo says sha256:%s",
			nixbase32.EncodeToString(sum[:]), nixbase32.EncodeToString(p.NARSha256[:])), nil
	}
	return "", "", nil
}

// countingWriter counts what it passes on.
type countingWriter struct {
	w interface{ Write([]byte) (int, error) }
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}
