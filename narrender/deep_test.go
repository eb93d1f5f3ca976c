package narrender_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// narBuilder writes NAR framing.
type narBuilder struct{ b []byte }

func (nb *narBuilder) str(ss ...string) {
	for _, s := range ss {
		nb.b = binary.LittleEndian.AppendUint64(nb.b, uint64(len(s)))
		nb.b = append(nb.b, s...)
		nb.b = append(nb.b, make([]byte, (8-len(s)%8)%8)...)
	}
}

// deepNAR returns a NAR of depth nested directories, each but the last
// holding one directory called name and, when withFiles, a file "a" of a
// few bytes before it; and the byte offset of each directory's "directory"
// token (where a depth error points).
func deepNAR(depth int, name string, withFiles bool) (nar []byte, dirAt []int) {
	var nb narBuilder
	nb.str("nix-archive-1")
	for i := range depth {
		nb.str("(", "type")
		dirAt = append(dirAt, len(nb.b))
		nb.str("directory")
		if withFiles {
			nb.str("entry", "(", "name", "a", "node", "(", "type", "regular", "contents", fmt.Sprintf("level %d", i), ")", ")")
		}
		if i < depth-1 {
			nb.str("entry", "(", "name", name, "node")
		}
	}
	for i := range depth {
		nb.str(")")
		if i < depth-1 {
			nb.str(")")
		}
	}
	return nb.b, dirAt
}

func TestDeepNAR(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		depth int
		files bool
		err   string
	}{
		{"depth 1", 1, false, ""},
		{"depth 100 with files", 100, true, ""},
		{"depth at the limit", narrender.MaxDepth, false, ""},
		{"depth 1,000 with files", 1000, true, ""},
		{"depth 60,000", 60000, false, ""},
		{"depth over the limit", narrender.MaxDepth + 1, false, fmt.Sprintf("directory nested %d deep, limit %d", narrender.MaxDepth+1, narrender.MaxDepth)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nar, dirAt := deepNAR(tc.depth, "dir", tc.files)
			s := new(castore.MemoryStore)
			res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
			if tc.err != "" {
				at := fmt.Sprintf("at byte offset %d,", dirAt[narrender.MaxDepth])
				if !errors.Is(err, narrender.ErrFormat) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), at) {
					t.Fatalf("Ingest: %.300v; want ErrFormat %s %q", err, at, tc.err)
				}
				if len(err.Error()) > 2048 {
					t.Errorf("error of %d bytes", len(err.Error()))
				}
				return
			}
			if err != nil {
				t.Fatalf("Ingest: %.300v", err)
			}
			var out bytes.Buffer
			if err := narrender.Render(ctx, &out, s, res.Root); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), nar) {
				t.Fatalf("render differs from the NAR (%d bytes, want %d)", out.Len(), len(nar))
			}
			// Paths are still there for whoever asks.
			r := narrender.NewReader(bytes.NewReader(nar))
			var lastHeader *narrender.Header
			for {
				h, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				lastHeader = h
			}
			last := lastHeader.Path() // a Header keeps its place after Next
			want := strings.Repeat("dir/", tc.depth-1)
			if tc.files {
				want += "a"
			} else {
				want = strings.TrimSuffix(want, "/")
			}
			if last != want {
				t.Errorf("last path %.60q…, want %.60q…", last, want)
			}
		})
	}
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDeepNARLinear: reading, ingesting, walking and rendering a NAR
// allocate in proportion to its size, whatever its depth: four times the
// depth costs about four times the bytes, not sixteen (as when each level
// kept its whole path).
func TestDeepNARLinear(t *testing.T) {
	ctx := context.Background()
	name := strings.Repeat("n", 40)
	cost := func(depth int) uint64 {
		nar, _ := deepNAR(depth, name, false)
		return allocated(func() {
			s := new(castore.MemoryStore)
			res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := narrender.Walk(ctx, s, res.Root, func(narrender.Node) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if err := narrender.Render(ctx, io.Discard, s, res.Root); err != nil {
				t.Fatal(err)
			}
		})
	}
	cost(100) // warm up shared buffers
	small, large := cost(1000), cost(4000)
	t.Logf("allocated %d bytes at depth 1000, %d at depth 4000 (%.1fx)", small, large, float64(large)/float64(small))
	if large > 6*small {
		t.Errorf("allocation grows faster than the depth: %d bytes at depth 1000, %d at 4000", small, large)
	}
}

// TestWalkStopsOnCancel: a walk of a tree far larger than its directory
// graph stops within a few nodes of its context ending, with the context's
// error, whether or not it reports nodes.
func TestWalkStopsOnCancel(t *testing.T) {
	s := new(castore.MemoryStore)
	// 40 directories each naming the next twice: 2^40 nodes expanded.
	c := &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "s", Target: "t"}}}
	for range 40 {
		d, err := s.PutDirectory(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		c = &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "a", Digest: d, Size: c.Size()}, {Name: "b", Digest: d, Size: c.Size()}}}
	}
	d, _ := s.PutDirectory(context.Background(), c)
	root := castore.Entry{Kind: castore.KindDirectory, Digest: d, Size: c.Size()}

	ctx, cancel := context.WithCancel(context.Background())
	var nodes, after int
	_, err := narrender.Walk(ctx, s, root, func(narrender.Node) error {
		nodes++
		if nodes == 10000 {
			cancel()
		}
		if nodes > 10000 {
			after++
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || after > 64 {
		t.Errorf("Walk after cancel: %v after %d more nodes; want context.Canceled within 64", err, after)
	}

	// Size reports no nodes: stop it from another goroutine once it has
	// read some directories.
	counted := &countingDirs{DirectoryStore: s, ChunkStore: s, BlobIndexStore: s, cancelAt: 10000}
	ctx, counted.cancel = context.WithCancel(context.Background())
	if _, err := narrender.Size(ctx, counted, root); !errors.Is(err, context.Canceled) || counted.after > 64 {
		t.Errorf("Size after cancel: %v after %d more directories; want context.Canceled within 64", err, counted.after)
	}
	ctx, counted.cancel = context.WithCancel(context.Background())
	counted.n, counted.after = 0, 0
	if err := narrender.Render(ctx, io.Discard, counted, root); !errors.Is(err, context.Canceled) || counted.after > 64+renderAheadSlack {
		t.Errorf("Render after cancel: %v after %d more directories", err, counted.after)
	}
}

// renderAheadSlack is how many directories a render may read ahead of its
// writer.
const renderAheadSlack = 64

// countingDirs counts GetDirectory calls and cancels at the cancelAt-th.
type countingDirs struct {
	castore.DirectoryStore
	castore.ChunkStore
	castore.BlobIndexStore
	n, after, cancelAt int
	cancel             context.CancelFunc
}

func (c *countingDirs) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	c.n++
	if c.n == c.cancelAt {
		c.cancel()
	}
	if c.n > c.cancelAt {
		c.after++
	}
	return c.DirectoryStore.GetDirectory(ctx, d)
}
