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

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/httpcache"
)

// countingStore counts directory reads: the work of a NAR render.
type countingStore struct {
	castore.Store
	dirs atomic.Int64
}

func (c *countingStore) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	c.dirs.Add(1)
	return c.Store.GetDirectory(ctx, d)
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
	cs := &countingStore{Store: pebble}
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
// million directories, within the limits) goes away, the render stops
// soon after, instead of walking the whole tree. The store is the
// in-memory one, which ignores contexts (as a cache would): the render
// must stop on its own. It watches nixcas_http_in_progress{kind="render"}
// go back to 0 and counts the directories read after the client left.
func TestCastoreNARAbandoned(t *testing.T) {
	_, index := newStore(t)
	cs := &countingStore{Store: &castore.MemoryStore{}}
	reg := prometheus.NewRegistry()
	srv := serve(t, httpcache.Options{CAS: cs, Index: index, Registerer: reg})
	const depth = 22
	root := putDAG(t, cs, depth)
	cs.dirs.Store(0)
	total := int64(1)<<depth - 1 // directory reads of a whole walk
	renders := func() float64 { return gauge(t, reg, "nixcas_http_in_progress", "kind", "render") }

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
	if n := renders(); n != 1 {
		t.Fatalf("%v renders in progress during the walk, want 1", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	atCancel := cs.dirs.Load()
	canceled := time.Now()
	cpuAtCancel := cpuTime(t)

	// The render ends (bounded against hangs): its handler returns.
	for renders() != 0 {
		if time.Since(canceled) > 2*time.Minute {
			t.Fatalf("the render still runs two minutes after the client left (%d of %d directories read)", cs.dirs.Load(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ended := time.Since(canceled)
	after := cs.dirs.Load()
	time.Sleep(time.Until(canceled.Add(time.Second)))
	t.Logf("the render ended %v after the client left, having read %d directories then and %d in all (a whole walk reads %d); the test process used %v of CPU from then until a second after the client left (or the render ended)",
		ended.Round(time.Millisecond), after-atCancel, after, total, (cpuTime(t) - cpuAtCancel).Round(time.Millisecond))
	if after >= total/2 {
		t.Errorf("the server read %d of the tree's %d directories after its client left at %d", after, total, atCancel)
	}
	if n := cs.dirs.Load(); n != after {
		t.Errorf("%d directories read after the render ended", n-after)
	}
}

// gauge returns the value of the gauge name{label="value"} in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// cpuTime returns the CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
