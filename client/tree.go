package client

import (
	"context"
	"fmt"
	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// tree is the metadata of a tree: its directories, children before
// parents, and its files' blobs, each once.
type tree struct {
	root  castore.Entry
	dirs  []dirItem
	blobs []blobItem
}

type dirItem struct {
	digest castore.Digest
	dir    *castore.Directory
}

type blobItem struct {
	digest castore.Digest
	size   uint64
	// chunks is the blob's chunk list, in order; a blob of one chunk
	// lists itself.
	chunks []castore.ChunkRef
}

// localTree reads the tree at root from s, with every blob's chunk list.
func localTree(ctx context.Context, s castore.Store, root castore.Entry) (*tree, error) {
	t := &tree{root: root}
	seenDirs := map[castore.Digest]bool{}
	seenBlobs := map[castore.Digest]bool{}
	addBlob := func(d castore.Digest, size uint64) error {
		if seenBlobs[d] {
			return nil
		}
		seenBlobs[d] = true
		chunks, err := castore.BlobChunks(ctx, s, d, size)
		if err != nil {
			return err
		}
		t.blobs = append(t.blobs, blobItem{digest: d, size: size, chunks: chunks})
		return nil
	}
	var walk func(d castore.Digest, size uint64, path string) error
	walk = func(d castore.Digest, size uint64, path string) error {
		if seenDirs[d] {
			return nil
		}
		seenDirs[d] = true
		dir, err := s.GetDirectory(ctx, d)
		if err != nil {
			return fmt.Errorf("%q: %w", path, err)
		}
		if dir.Size() != size {
			return fmt.Errorf("%w: %q: directory %s has size %d, its entry says %d", castore.ErrCorrupt, path, d, dir.Size(), size)
		}
		for _, e := range dir.Directories {
			if err := walk(e.Digest, e.Size, path+"/"+e.Name); err != nil {
				return err
			}
		}
		for _, e := range dir.Files {
			if err := addBlob(e.Digest, e.Size); err != nil {
				return fmt.Errorf("%q: %w", path+"/"+e.Name, err)
			}
		}
		t.dirs = append(t.dirs, dirItem{digest: d, dir: dir})
		return nil
	}
	var err error
	switch root.Kind {
	case castore.KindDirectory:
		err = walk(root.Digest, root.Size, "")
	case castore.KindFile:
		err = addBlob(root.Digest, root.Size)
	case castore.KindSymlink:
	default:
		err = fmt.Errorf("%w: root entry of %v", castore.ErrInvalid, root.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("client: reading the tree from the cache: %w", err)
	}
	return t, nil
}

// inNAROrder orders t's blobs as a walk of the tree in NAR order first
// meets them. A server ingests a tree in that order, so its hot frames
// hold the tree's chunks in it; a pull writes files in it too, so that
// the frames it receives are used as they come.
func (t *tree) inNAROrder() {
	if t.root.Kind != castore.KindDirectory {
		return
	}
	dirs := make(map[castore.Digest]*castore.Directory, len(t.dirs))
	for _, d := range t.dirs {
		dirs[d.digest] = d.dir
	}
	at := make(map[castore.Digest]int, len(t.blobs))
	for i, b := range t.blobs {
		at[b.digest] = i
	}
	out := make([]blobItem, 0, len(t.blobs))
	seenDirs := map[castore.Digest]bool{}
	var walk func(d castore.Digest)
	walk = func(d castore.Digest) {
		if seenDirs[d] {
			return
		}
		seenDirs[d] = true
		for _, e := range narrender.SortedEntries(dirs[d]) {
			switch e.Kind {
			case castore.KindDirectory:
				walk(e.Digest)
			case castore.KindFile:
				if i, ok := at[e.Digest]; ok {
					out = append(out, t.blobs[i])
					delete(at, e.Digest)
				}
			}
		}
	}
	walk(t.root.Digest)
	t.blobs = out
}

// chunkUses returns how many times writing the trees at roots reads each
// chunk: once for each chunk of each file entry, a directory named twice
// counting twice, as materialize writes it twice. dirs and blobs hold the
// trees' directories and chunk lists.
func chunkUses(roots []castore.Entry, dirs []dirItem, blobs []blobItem) map[castore.Digest]int {
	byDigest := make(map[castore.Digest]*castore.Directory, len(dirs))
	for _, d := range dirs {
		byDigest[d.digest] = d.dir
	}
	chunks := make(map[castore.Digest][]castore.ChunkRef, len(blobs))
	for _, b := range blobs {
		chunks[b.digest] = b.chunks
	}
	uses := map[castore.Digest]int{}
	file := func(d castore.Digest) {
		for _, r := range chunks[d] {
			uses[r.Digest]++
		}
	}
	var walk func(d castore.Digest)
	walk = func(d castore.Digest) {
		dir := byDigest[d]
		if dir == nil {
			return
		}
		for _, e := range dir.Directories {
			walk(e.Digest)
		}
		for _, e := range dir.Files {
			file(e.Digest)
		}
	}
	for _, r := range roots {
		switch r.Kind {
		case castore.KindDirectory:
			walk(r.Digest)
		case castore.KindFile:
			file(r.Digest)
		}
	}
	return uses
}
