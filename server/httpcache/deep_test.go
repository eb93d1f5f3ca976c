package httpcache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/httpcache"
)

// countingStore counts directory reads: the work of a NAR render.
type countingStore struct {
	*castore.PebbleStore
	dirs atomic.Int64
}

func (c *countingStore) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	c.dirs.Add(1)
	return c.PebbleStore.GetDirectory(ctx, d)
}

// putDAG stores depth directories each naming the one below twice (the
// bottom one holds a symlink) and returns the root entry: a graph of
// depth directories describing 2^depth - 1 directories.
func putDAG(t *testing.T, s castore.DirectoryStore, depth int) castore.Entry {
	t.Helper()
	c := &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "s", Target: "target"}}}
	for i := 0; ; i++ {
		d, err := s.PutDirectory(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		if i == depth-1 {
			return castore.Entry{Kind: castore.KindDirectory, Digest: d, Size: c.Size()}
		}
		c = &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "a", Digest: d, Size: c.Size()}, {Name: "b", Digest: d, Size: c.Size()}}}
	}
}

func castoreURL(t *testing.T, base string, root castore.Entry) string {
	t.Helper()
	b, err := proto.Marshal(castore.EntryToProto(root))
	if err != nil {
		t.Fatal(err)
	}
	return base + "/nar/snix-castore/" + base64.RawURLEncoding.EncodeToString(b)
}

// TestCastoreNARTreeLimits: a directory graph that expands past the tree
// limits is refused at once with 400 naming the limit.
func TestCastoreNARTreeLimits(t *testing.T) {
	pebble, index := newStore(t)
	cs := &countingStore{PebbleStore: pebble}
	srv := serve(t, httpcache.Options{CAS: cs, Index: index})
	root := putDAG(t, pebble, 31) // 2^31 - 1 directories, 3 * 2^30 - 2 entries
	code, body, _ := fetch(t, http.MethodGet, castoreURL(t, srv.url, root), nil, nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "entries, limit 10000000") {
		t.Errorf("GET of a 31-level DAG: %d %q; want 400 naming the entry limit", code, body)
	}
	if n := cs.dirs.Load(); n > 31 {
		t.Errorf("refusing the DAG read %d directories, want each of the 31 once", n)
	}

	// The same with a lower limit on a smaller DAG.
	small := serve(t, httpcache.Options{CAS: cs, Index: index, Tree: castore.TreeLimits{MaxEntries: 1000}})
	code, body, _ = fetch(t, http.MethodGet, castoreURL(t, small.url, putDAG(t, pebble, 10)), nil, nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "1534 entries, limit 1000") {
		t.Errorf("GET of a 10-level DAG, limit 1000 entries: %d %q", code, body)
	}
}

// TestCastoreNARAbandoned: when the client of a long render (a tree of 4
// million directories, within the limits) goes away, the server stops
// reading directories soon after, instead of walking the whole tree.
func TestCastoreNARAbandoned(t *testing.T) {
	pebble, index := newStore(t)
	cs := &countingStore{PebbleStore: pebble}
	srv := serve(t, httpcache.Options{CAS: cs, Index: index})
	const depth = 22
	root := putDAG(t, pebble, depth)
	total := int64(1)<<depth - 1 // directory reads of a whole walk

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, castoreURL(t, srv.url, root), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	// Give up once the server is well into the walk.
	for deadline := time.Now().Add(time.Minute); cs.dirs.Load() < 20000; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server read only %d directories in a minute", cs.dirs.Load())
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	atCancel := cs.dirs.Load()
	canceled := time.Now()
	cpuAtCancel := cpuTime(t)

	// Wait (bounded against hangs) until no directory is read for half a
	// second.
	last, stable := atCancel, time.Now()
	for time.Since(stable) < 500*time.Millisecond {
		if time.Since(canceled) > 2*time.Minute {
			t.Fatalf("the server still reads directories two minutes after the client left (%d of %d)", cs.dirs.Load(), total)
		}
		time.Sleep(20 * time.Millisecond)
		if n := cs.dirs.Load(); n != last {
			last, stable = n, time.Now()
		}
	}
	time.Sleep(time.Until(canceled.Add(time.Second)))
	t.Logf("the test process used %v of CPU in the second after the client left", (cpuTime(t) - cpuAtCancel).Round(time.Millisecond))
	t.Logf("client left after %d directory reads; the server read %d more, the last within %v (a whole walk reads %d)",
		atCancel, last-atCancel, stable.Sub(canceled).Round(time.Millisecond), total)
	if last >= total/2 {
		t.Errorf("the server read %d of the tree's %d directories after its client left at %d", last, total, atCancel)
	}
	if d := stable.Sub(canceled); d > 10*time.Second {
		t.Errorf("the server went on reading directories for %v after the client left", d)
	}
}

// cpuTime returns the CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
