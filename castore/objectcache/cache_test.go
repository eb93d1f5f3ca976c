package objectcache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/objectcache"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/pebblestore/objectstoretest"
)

// remote is a fault-injecting ObjectStore in front of DirObjects: it
// counts whole-object reads, can hold them until released, cut them
// short, or fail them as an unreachable service would.
type remote struct {
	pebblestore.ObjectStore
	gets     atomic.Int64
	gate     chan struct{} // non-nil: reads wait for it to close
	truncate atomic.Bool
	down     atomic.Bool
}

func newRemote(t *testing.T) *remote {
	return &remote{ObjectStore: pebblestore.NewDirObjects(t.TempDir())}
}

func (r *remote) GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	r.gets.Add(1)
	if r.gate != nil {
		<-r.gate
	}
	if r.down.Load() {
		return dst, castore.ErrUnavailable
	}
	b, err := r.ObjectStore.GetObject(ctx, name, off, n, dst)
	if err == nil && r.truncate.Load() {
		b = b[:len(b)/2]
	}
	return b, err
}

func open(t *testing.T, dir string, max int64, r pebblestore.ObjectStore) *objectcache.Cache {
	t.Helper()
	c, err := objectcache.Open(dir, max, r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore {
		return open(t, t.TempDir(), 64<<20, newRemote(t))
	})
}

// A cache too small for most objects still behaves as a store.
func TestConformanceTiny(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore {
		return open(t, t.TempDir(), 100_000, newRemote(t))
	})
}

func TestOneFetchForConcurrentMisses(t *testing.T) {
	r := newRemote(t)
	name, data := objectstoretest.Object(1, 300_000)
	objectstoretest.MustPut(t, r, name, data)
	r.gate = make(chan struct{})
	c := open(t, t.TempDir(), 10<<20, r)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			got, err := c.GetObject(context.Background(), name, int64(i*1000), 1000, nil)
			if err == nil && !bytes.Equal(got, data[i*1000:i*1000+1000]) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		})
	}
	// Let the readers pile up behind the one fetch, then release it.
	deadline := time.Now().Add(10 * time.Second)
	for r.gets.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(r.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := r.gets.Load(); n != 1 {
		t.Fatalf("16 concurrent misses fetched the object %d times, want 1", n)
	}
	objectstoretest.MustGet(t, c, name)
	if n := r.gets.Load(); n != 1 {
		t.Fatalf("a read after the fill went to the remote store (%d fetches)", n)
	}
}

func TestTruncatedFetchNeverServedOrKept(t *testing.T) {
	r := newRemote(t)
	name, data := objectstoretest.Object(2, 100_000)
	objectstoretest.MustPut(t, r, name, data)
	dir := t.TempDir()
	c := open(t, dir, 10<<20, r)
	r.truncate.Store(true)
	for _, rg := range [][2]int64{{0, -1}, {0, 10}} {
		got, err := c.GetObject(context.Background(), name, rg[0], rg[1], []byte("keep"))
		if !errors.Is(err, castore.ErrCorrupt) || string(got) != "keep" {
			t.Fatalf("read of a truncated fetch: %d bytes, err %v; want ErrCorrupt and nothing", len(got), err)
		}
	}
	if c.Used() != 0 {
		t.Fatalf("a truncated fetch was kept: %d bytes cached", c.Used())
	}
	r.truncate.Store(false)
	if got := objectstoretest.MustGet(t, c, name); !bytes.Equal(got, data) {
		t.Fatal("read after the remote store recovered differs")
	}
	if c.Used() != int64(len(data)) {
		t.Fatalf("%d bytes cached, want %d", c.Used(), len(data))
	}
}

func TestUnavailableRemote(t *testing.T) {
	r := newRemote(t)
	name, data := objectstoretest.Object(3, 5000)
	objectstoretest.MustPut(t, r, name, data)
	c := open(t, t.TempDir(), 10<<20, r)
	r.down.Store(true)
	if _, err := c.GetObject(context.Background(), name, 0, -1, nil); !errors.Is(err, castore.ErrUnavailable) {
		t.Fatalf("read with the remote store down: %v, want ErrUnavailable", err)
	}
	r.down.Store(false)
	if got := objectstoretest.MustGet(t, c, name); !bytes.Equal(got, data) {
		t.Fatal("read after the remote store came back differs")
	}
	// Cached now: served with the remote store down.
	r.down.Store(true)
	if got := objectstoretest.MustGet(t, c, name); !bytes.Equal(got, data) {
		t.Fatal("cached read with the remote store down differs")
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	r := newRemote(t)
	var names []string
	objs := map[string][]byte{}
	for i := range 6 {
		name, data := objectstoretest.Object(uint64(10+i), 10_000)
		objectstoretest.MustPut(t, r, name, data)
		names = append(names, name)
		objs[name] = data
	}
	dir := t.TempDir()
	c := open(t, dir, 35_000, r) // room for three
	for _, name := range names[:3] {
		objectstoretest.MustGet(t, c, name)
	}
	objectstoretest.MustGet(t, c, names[0]) // names[1] is now the oldest
	objectstoretest.MustGet(t, c, names[3]) // evicts names[1]
	if c.Used() > 35_000 {
		t.Fatalf("%d bytes cached, over the 35000 limit", c.Used())
	}
	before := r.gets.Load()
	objectstoretest.MustGet(t, c, names[0])
	objectstoretest.MustGet(t, c, names[2])
	if r.gets.Load() != before {
		t.Fatal("recently used objects were evicted")
	}
	if _, err := os.Stat(filepath.Join(dir, names[1][:2], names[1])); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the least recently used object is still on disk: %v", err)
	}
	// Every object still reads right, evicting as it goes.
	for _, name := range append(names, names...) {
		if got := objectstoretest.MustGet(t, c, name); !bytes.Equal(got, objs[name]) {
			t.Fatalf("object %s differs after evictions", name)
		}
		if c.Used() > 35_000 {
			t.Fatalf("%d bytes cached, over the 35000 limit", c.Used())
		}
	}
}

func TestReopenKeepsCopies(t *testing.T) {
	r := newRemote(t)
	dir := t.TempDir()
	c := open(t, dir, 1<<20, r)
	var names []string
	for i := range 4 {
		name, data := objectstoretest.Object(uint64(20+i), 50_000)
		objectstoretest.MustPut(t, r, name, data)
		objectstoretest.MustGet(t, c, name)
		names = append(names, name)
		// Modification times order the copies on reopening.
		old := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(filepath.Join(dir, name[:2], name), old, old)
	}
	// Leftovers of a crash and a foreign file.
	os.WriteFile(filepath.Join(dir, names[0][:2], names[0]+".tmp123"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not an object"), 0o644)

	before := r.gets.Load()
	c2 := open(t, dir, 1<<20, r)
	if c2.Used() != 200_000 {
		t.Fatalf("reopened cache holds %d bytes, want 200000", c2.Used())
	}
	for _, name := range names {
		objectstoretest.MustGet(t, c2, name)
	}
	if r.gets.Load() != before {
		t.Fatal("the reopened cache fetched objects it had")
	}
	if _, err := os.Stat(filepath.Join(dir, names[0][:2], names[0]+".tmp123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a temporary file survived reopening")
	}
	// Reopened smaller: the oldest go.
	c3 := open(t, dir, 120_000, r)
	if c3.Used() != 100_000 {
		t.Fatalf("cache reopened with a 120000 limit holds %d bytes, want 100000", c3.Used())
	}
	before = r.gets.Load()
	objectstoretest.MustGet(t, c3, names[3])
	objectstoretest.MustGet(t, c3, names[2])
	if r.gets.Load() != before {
		t.Fatal("the newest copies were evicted on reopening, not the oldest")
	}
}

func TestDamagedCopyFetchedAgain(t *testing.T) {
	r := newRemote(t)
	dir := t.TempDir()
	c := open(t, dir, 1<<20, r)
	name, data := objectstoretest.Object(30, 40_000)
	objectstoretest.MustPut(t, r, name, data)
	objectstoretest.MustGet(t, c, name)
	p := filepath.Join(dir, name[:2], name)
	for _, damage := range []func(){
		func() { os.Truncate(p, 1000) },
		func() {
			b, _ := os.ReadFile(p)
			b[5000] ^= 1
			os.WriteFile(p, b, 0o644)
		},
		func() { os.Remove(p) },
	} {
		damage()
		before := r.gets.Load()
		if got := objectstoretest.MustGet(t, c, name); !bytes.Equal(got, data) {
			t.Fatal("read of a damaged copy differs")
		}
		if r.gets.Load() != before+1 {
			t.Fatal("a damaged copy was not fetched again")
		}
	}
}

func TestDeleteDropsCopy(t *testing.T) {
	r := newRemote(t)
	dir := t.TempDir()
	c := open(t, dir, 1<<20, r)
	name, data := objectstoretest.Object(40, 1000)
	objectstoretest.MustPut(t, c, name, data)
	objectstoretest.MustGet(t, c, name)
	if err := c.DeleteObject(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	if c.Used() != 0 {
		t.Fatalf("%d bytes cached after delete", c.Used())
	}
	if _, err := c.GetObject(context.Background(), name, 0, -1, nil); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("read after delete: %v", err)
	}
}

func TestOpenInvalid(t *testing.T) {
	if _, err := objectcache.Open(t.TempDir(), 0, newRemote(t)); !errors.Is(err, castore.ErrInvalid) {
		t.Fatalf("Open with a zero limit: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := objectcache.Open(filepath.Join(f, "sub"), 1<<20, newRemote(t)); err == nil {
		t.Fatal("Open under a file succeeded")
	}
}
