package client

import (
	"context"
	"fmt"

	"github.com/nixcas/nixcas/castore"
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
