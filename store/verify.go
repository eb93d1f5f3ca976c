package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

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
	// Progress, when set, is called as work is done: phase "chunks"
	// counts uncompressed chunk bytes, phase "paths" counts paths (NAR
	// bytes with ReadData).
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
	// Problems lists chunk problems first (in digest order), then path
	// problems (in store path digest order), one per broken path.
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

// chunkDeleter removes a chunk; castore.PebbleStore implements it.
type chunkDeleter interface {
	DeleteChunk(ctx context.Context, d castore.Digest) (bool, error)
}

// Verify checks that every PathInfo's tree is all in the castore and,
// with ReadData, that every chunk reads back as the bytes its digest
// names and every NAR renders to its recorded hash and size. It returns
// an error only when it cannot go on (the index unreadable, ctx done);
// what is broken goes into the report. With Repair, the broken paths are
// deleted (their other data becomes garbage for a collection) and, when
// the castore can, the corrupt chunks. It reads the store once per path:
// meant for a store at rest or a quiet server.
func (x *Index) Verify(ctx context.Context, o VerifyOptions) (VerifyReport, error) {
	rep := VerifyReport{ReadData: o.ReadData, Problems: []Problem{}, Broken: []string{}, Removed: []string{}}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	bad := map[castore.Digest]string{} // corrupt chunks, with why
	var badOrder []castore.Digest
	if o.ReadData {
		if scan, ok := x.cas.(ChunkScanner); ok {
			st, err := x.cas.Stats(ctx)
			if err != nil {
				return rep, err
			}
			var done int64
			var buf []byte
			cas := castore.Verifying(x.cas)
			err = scan.ScanChunks(ctx, func(d castore.Digest, size int) error {
				rep.Chunks++
				rep.ChunkBytes += uint64(size)
				var err error
				buf, err = cas.GetChunk(ctx, d, buf[:0])
				switch {
				case err == nil && len(buf) != size:
					err = fmt.Errorf("%w: chunk %s: %d bytes, its record says %d", castore.ErrCorrupt, d, len(buf), size)
				case err != nil && ctx.Err() != nil:
					return ctx.Err()
				}
				if err != nil {
					bad[d] = err.Error()
					badOrder = append(badOrder, d)
					rep.Problems = append(rep.Problems, Problem{Digest: d.String(), What: ProblemCorrupt, Detail: err.Error()})
				}
				done += int64(size)
				progress("chunks", done, int64(st.UniqueChunkBytes))
				return nil
			})
			if err != nil {
				return rep, fmt.Errorf("store: reading every chunk: %w", err)
			}
		}
	}

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
	var broken []PathDigest
	var done int64
	h := sha256.New()
	err := x.List(ctx, func(p *PathInfo) error {
		rep.Paths++
		rep.NARBytes += p.NARSize
		what, detail, err := x.verifyPath(ctx, p, o.ReadData, bad, h)
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
	if err != nil {
		return rep, fmt.Errorf("store: verifying paths: %w", err)
	}
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
		for _, d := range badOrder {
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

// verifyPath checks one path, returning the kind of problem and what it
// is ("" when the path is sound); err only when verifying cannot go on.
func (x *Index) verifyPath(ctx context.Context, p *PathInfo, read bool, bad map[castore.Digest]string, h hash.Hash) (what, detail string, err error) {
	if err := CheckTree(ctx, x.cas, p.Root); err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		if errors.Is(err, ErrIncomplete) {
			return ProblemIncomplete, err.Error(), nil
		}
		return ProblemCorrupt, err.Error(), nil
	}
	if len(bad) > 0 {
		if d, why, err := x.usesChunk(ctx, p.Root, bad); err != nil {
			return "", "", err
		} else if why != "" {
			return ProblemCorrupt, fmt.Sprintf("chunk %s: %s", d, why), nil
		}
	}
	if !read {
		return "", "", nil
	}
	h.Reset()
	n := &countingWriter{w: h}
	if err := narrender.Render(ctx, n, castore.Verifying(x.cas), p.Root); err != nil {
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

// usesChunk returns the first chunk of bad the tree at root uses, with
// why it is bad ("" when it uses none).
func (x *Index) usesChunk(ctx context.Context, root castore.Entry, bad map[castore.Digest]string) (castore.Digest, string, error) {
	var found castore.Digest
	var why string
	errFound := errors.New("found")
	_, err := narrender.Walk(ctx, x.cas, root, func(n narrender.Node) error {
		if n.Entry.Kind != castore.KindFile {
			return nil
		}
		chunks, err := castore.BlobChunks(ctx, x.cas, n.Entry.Digest, n.Entry.Size)
		if err != nil {
			return err
		}
		for _, c := range chunks {
			if w, ok := bad[c.Digest]; ok {
				found, why = c.Digest, w
				return errFound
			}
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return found, why, nil
	}
	return found, "", err
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
