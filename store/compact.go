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
	type placed struct {
		group  string
		offset uint64
		path   int
		digest castore.Digest
	}
	var (
		entries []placed
		groups  = map[string]string{} // interned group keys
		blobs   = map[castore.Digest]bool{}
		dirs    = map[castore.Digest]bool{}
		paths   int
	)
	intern := func(s string) string {
		if k, ok := groups[s]; ok {
			return k
		}
		groups[s] = s
		return s
	}
	type item struct {
		entry castore.Entry
		rel   string
	}
	err := roots(func(name string, root castore.Entry) error {
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
				var group string
				var off uint64
				for _, c := range chunks {
					if keep == nil || keep(c.Digest) {
						if group == "" {
							group = intern(FileGroup(name, it.rel))
						}
						entries = append(entries, placed{group: group, offset: off, path: paths, digest: c.Digest})
					}
					off += uint64(c.Size)
				}
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
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b placed) int {
		return cmp.Or(strings.Compare(a.group, b.group), cmp.Compare(a.offset, b.offset), cmp.Compare(a.path, b.path))
	})
	seen := make(map[castore.Digest]bool, len(entries))
	order := make([]castore.Digest, 0, len(entries))
	for _, e := range entries {
		if !seen[e.digest] {
			seen[e.digest] = true
			order = append(order, e.digest)
		}
	}
	return order, nil
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
