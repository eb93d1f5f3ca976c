package store

import (
	"context"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// ChunkScanner lists every stored chunk; pebblestore.Store implements it.
type ChunkScanner interface {
	ScanChunks(ctx context.Context, fn func(d castore.Digest, size int) error) error
}

// Unreferenced is what no PathInfo and no kept file (log, debug info,
// realisation) reaches: chunks a garbage collection would free.
type Unreferenced struct {
	Chunks uint64
	// Bytes is their uncompressed size.
	Bytes uint64
}

// Unreferenced marks every chunk reachable from the index's PathInfos and
// kept files, then counts the chunks of scan that are not marked. It
// reads the whole index and every directory and blob index once, and holds
// the digests of the reachable chunks in memory (about 80 bytes each): it
// is meant for a store at rest, not for a server's hot path. Concurrent
// writes may be counted either way.
func (x *Index) Unreferenced(ctx context.Context, scan ChunkScanner) (Unreferenced, error) {
	var u Unreferenced
	m := marker{cas: x.cas, dirs: map[castore.Digest]bool{}, blobs: map[castore.Digest]bool{}, chunks: map[castore.Digest]struct{}{}}
	err := x.List(ctx, func(p *PathInfo) error { return m.mark(ctx, p.Root) })
	if err != nil {
		return u, err
	}
	err = x.scanFiles(ctx, func(_ string, d castore.Digest, size uint64) error {
		return m.mark(ctx, castore.Entry{Kind: castore.KindFile, Digest: d, Size: size})
	})
	if err != nil {
		return u, err
	}
	err = scan.ScanChunks(ctx, func(d castore.Digest, size int) error {
		if _, ok := m.chunks[d]; !ok {
			u.Chunks++
			u.Bytes += uint64(size)
		}
		return nil
	})
	return u, err
}

// marker collects the chunks reachable from trees, each directory and
// blob visited once.
type marker struct {
	cas    castore.Store
	dirs   map[castore.Digest]bool
	blobs  map[castore.Digest]bool
	chunks map[castore.Digest]struct{}
}

// mark marks the chunks of the tree at root, walking with an explicit
// stack.
func (m *marker) mark(ctx context.Context, root castore.Entry) error {
	stack := []castore.Entry{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch e.Kind {
		case castore.KindFile:
			if m.blobs[e.Digest] {
				continue
			}
			m.blobs[e.Digest] = true
			chunks, err := castore.BlobChunks(ctx, m.cas, e.Digest, e.Size)
			if err != nil {
				return fmt.Errorf("blob %s: %w", e.Digest, err)
			}
			for _, c := range chunks {
				m.chunks[c.Digest] = struct{}{}
			}
		case castore.KindDirectory:
			if m.dirs[e.Digest] {
				continue
			}
			m.dirs[e.Digest] = true
			dir, err := m.cas.GetDirectory(ctx, e.Digest)
			if err != nil {
				return fmt.Errorf("directory %s: %w", e.Digest, err)
			}
			stack = append(stack, dir.Entries()...)
		}
	}
	return nil
}
