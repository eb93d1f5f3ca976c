package store

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/nixcas/nixcas/castore"
)

// CompactionOrder lists the chunks keep accepts (all when keep is nil) of
// every store path's files so that the versions of a file lie side by
// side, for castore's Compact (see ChunkOrder). Its signature is that of
// pebblestore.CompactOptions.Order.
func (x *Index) CompactionOrder(ctx context.Context, keep func(castore.Digest) bool) ([]castore.Digest, error) {
	return ChunkOrder(ctx, x.cas, keep, func(yield func(name string, root castore.Entry) error) error {
		return x.List(ctx, func(p *PathInfo) error { return yield(PathName(p.Path), p.Root) })
	})
}

// CompactionNeighbourhood lists, in CompactionOrder's order, the chunks of
// every file grouped (see FileGroup) with a file holding a chunk isNew
// accepts: the new chunks and the earlier versions of their files (see
// ChunkNeighbourhood). Its signature is that of
// pebblestore.CompactOptions.Neighbourhood.
func (x *Index) CompactionNeighbourhood(ctx context.Context, isNew func(castore.Digest) bool) ([]castore.Digest, error) {
	return ChunkNeighbourhood(ctx, x.cas, isNew, func(yield func(name string, root castore.Entry) error) error {
		return x.List(ctx, func(p *PathInfo) error { return yield(PathName(p.Path), p.Root) })
	})
}

// ChunkOrder lists the chunks of the trees roots yields (each with the
// name of its store path, without the hash) so that the versions of a file
// lie side by side: files are grouped by a key that survives a version
// change (see FileGroup), and within a group the chunks of all versions
// are sorted by their offset in the file, then by the order of the roots.
// Each chunk is listed once, where it first occurs; only chunks keep
// accepts are listed (every chunk when keep is nil).
//
// Cost: it reads every directory and blob index of every root once
// (whatever keep says), and holds in memory an entry per occurrence of a
// chunk keep accepts (about 70 bytes), plus the digest of every distinct
// file and directory met (about 80 bytes each), so as to read each once.
func ChunkOrder(ctx context.Context, cas castore.Store, keep func(castore.Digest) bool, roots func(yield func(name string, root castore.Entry) error) error) ([]castore.Digest, error) {
	var o orderedChunks
	err := walkFiles(ctx, cas, roots, func(f fileChunks) {
		var group string
		var off uint64
		for _, c := range f.chunks {
			if keep == nil || keep(c.Digest) {
				if group == "" {
					group = o.intern(FileGroup(f.name, f.rel))
				}
				o.add(group, off, f.path, c.Digest)
			}
			off += uint64(c.Size)
		}
	})
	if err != nil {
		return nil, err
	}
	return o.sorted(), nil
}

// ChunkNeighbourhood lists, in ChunkOrder's order, every chunk of the
// files that share a group (see FileGroup) with a file holding a chunk
// isNew accepts: the new chunks, and the chunks of the other versions of
// their files, which a compaction rewrites with them. It reads every
// directory and blob index twice (once to find the groups of the new
// chunks, once to list them), so that memory follows the new chunks'
// groups: an entry per occurrence of a chunk of those groups (about 70
// bytes), the names of the groups, and the digest of every distinct file
// and directory met (about 80 bytes each), but not an entry per chunk of
// the store as ChunkOrder with every chunk kept would hold.
func ChunkNeighbourhood(ctx context.Context, cas castore.Store, isNew func(castore.Digest) bool, roots func(yield func(name string, root castore.Entry) error) error) ([]castore.Digest, error) {
	groups := map[string]bool{}
	err := walkFiles(ctx, cas, roots, func(f fileChunks) {
		for _, c := range f.chunks {
			if isNew(c.Digest) {
				groups[FileGroup(f.name, f.rel)] = true
				return
			}
		}
	})
	if err != nil || len(groups) == 0 {
		return nil, err
	}
	var o orderedChunks
	err = walkFiles(ctx, cas, roots, func(f fileChunks) {
		group := FileGroup(f.name, f.rel)
		if !groups[group] {
			return
		}
		group = o.intern(group)
		var off uint64
		for _, c := range f.chunks {
			o.add(group, off, f.path, c.Digest)
			off += uint64(c.Size)
		}
	})
	if err != nil {
		return nil, err
	}
	return o.sorted(), nil
}

// fileChunks is a file met by walkFiles: the name of its store path, its
// path in it, the number of the root it was met in (from 1), its chunks.
type fileChunks struct {
	name, rel string
	path      int
	chunks    []castore.ChunkRef
}

// walkFiles calls fn with every distinct file (by digest) of the trees
// roots yields, where it first occurs, reading each directory and blob
// index once. fn must not keep f.chunks.
func walkFiles(ctx context.Context, cas castore.Store, roots func(yield func(name string, root castore.Entry) error) error, fn func(f fileChunks)) error {
	var (
		blobs = map[castore.Digest]bool{}
		dirs  = map[castore.Digest]bool{}
		paths int
	)
	type item struct {
		entry castore.Entry
		rel   string
	}
	return roots(func(name string, root castore.Entry) error {
		paths++
		stack := []item{{entry: root}}
		for len(stack) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			it := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			switch it.entry.Kind {
			case castore.KindFile:
				if blobs[it.entry.Digest] {
					continue
				}
				blobs[it.entry.Digest] = true
				chunks, err := castore.BlobChunks(ctx, cas, it.entry.Digest, it.entry.Size)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", name, it.rel, err)
				}
				fn(fileChunks{name: name, rel: it.rel, path: paths, chunks: chunks})
			case castore.KindDirectory:
				if dirs[it.entry.Digest] {
					continue
				}
				dirs[it.entry.Digest] = true
				dir, err := cas.GetDirectory(ctx, it.entry.Digest)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", name, it.rel, err)
				}
				for _, e := range dir.Entries() {
					stack = append(stack, item{entry: e, rel: path.Join(it.rel, e.Name)})
				}
			}
		}
		return nil
	})
}

// orderedChunks gathers chunk occurrences for ChunkOrder and
// ChunkNeighbourhood.
type orderedChunks struct {
	entries []placedChunk
	groups  map[string]string // interned group keys
}

type placedChunk struct {
	group  string
	offset uint64
	path   int
	digest castore.Digest
}

func (o *orderedChunks) intern(s string) string {
	if k, ok := o.groups[s]; ok {
		return k
	}
	if o.groups == nil {
		o.groups = map[string]string{}
	}
	o.groups[s] = s
	return s
}

func (o *orderedChunks) add(group string, offset uint64, path int, d castore.Digest) {
	o.entries = append(o.entries, placedChunk{group: group, offset: offset, path: path, digest: d})
}

// sorted returns the digests by group, offset and path, each once, where
// it first occurs.
func (o *orderedChunks) sorted() []castore.Digest {
	slices.SortFunc(o.entries, func(a, b placedChunk) int {
		return cmp.Or(strings.Compare(a.group, b.group), cmp.Compare(a.offset, b.offset), cmp.Compare(a.path, b.path))
	})
	seen := make(map[castore.Digest]bool, len(o.entries))
	order := make([]castore.Digest, 0, len(o.entries))
	for _, e := range o.entries {
		if !seen[e.digest] {
			seen[e.digest] = true
			order = append(order, e.digest)
		}
	}
	return order
}

// FileGroup returns the key under which compaction groups the file at rel
// in a store path named name: the package name as Nix splits it off the
// version (at the first dash followed by a digit), then the file's path,
// both without digits, so that "go-1.21.0/bin/go" and "go-1.22.0/bin/go",
// or "lib/libfoo.so.1.2" and "lib/libfoo.so.1.3", fall together.
func FileGroup(name, rel string) string {
	pname := name
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '-' && '0' <= name[i+1] && name[i+1] <= '9' {
			pname = name[:i]
			break
		}
	}
	dropDigits := func(r rune) rune {
		if '0' <= r && r <= '9' {
			return -1
		}
		return r
	}
	return strings.Map(dropDigits, pname) + "/" + strings.Map(dropDigits, rel)
}
