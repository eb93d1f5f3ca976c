package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// fakeClock is a settable clock for access times.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clockedStore opens a store whose index takes its time from a fake clock.
func clockedStore(t *testing.T) (*pebblestore.Store, *store.Index, *fakeClock) {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return s, store.NewIndex(s, s, store.WithClock(c.now)), c
}

// testPath returns a valid store path base name numbered i.
func testPath(i int) string {
	return fmt.Sprintf("%032d-p%d", i, i)
}

// putPaths stores n paths, each with a NAR of size roughly 100 bytes plus
// its own contents, and returns them.
func putPaths(t *testing.T, s castore.Store, x *store.Index, n int) []*store.PathInfo {
	t.Helper()
	var ps []*store.PathInfo
	for i := range n {
		ps = append(ps, putPath(t, s, x, i))
	}
	return ps
}

// putPath stores path i of putPaths.
func putPath(t *testing.T, s castore.Store, x *store.Index, i int) *store.PathInfo {
	t.Helper()
	p := ingestNAR(t, s, testPath(i), strings.Repeat(fmt.Sprint(i), 10+i))
	if err := x.Put(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func names(ps []store.ExpiredPath) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path)
	}
	return out
}

func present(t *testing.T, x *store.Index) []string {
	t.Helper()
	var out []string
	if err := x.List(context.Background(), func(p *store.PathInfo) error {
		out = append(out, p.Path)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestPins(t *testing.T) {
	ctx := context.Background()
	s, x, _ := clockedStore(t)
	ps := putPaths(t, s, x, 2)
	if ok, err := x.Pin(ctx, ps[0].Digest()); err != nil || !ok {
		t.Fatalf("Pin: %v, %v", ok, err)
	}
	if ok, err := x.Pin(ctx, ps[0].Digest()); err != nil || ok {
		t.Fatalf("second Pin: %v, %v; want false, nil", ok, err)
	}
	missing, _ := store.ParsePathDigest("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")
	if _, err := x.Pin(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Pin of a path not stored: %v; want ErrNotFound", err)
	}
	var pins []store.Pin
	if err := x.Pins(ctx, func(p store.Pin) error { pins = append(pins, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || pins[0].Path != ps[0].Path || pins[0].Since.IsZero() {
		t.Fatalf("Pins = %+v; want %s", pins, ps[0].Path)
	}
	if ok, err := x.Unpin(ctx, ps[1].Digest()); err != nil || ok {
		t.Fatalf("Unpin of an unpinned path: %v, %v", ok, err)
	}
	if ok, err := x.Unpin(ctx, ps[0].Digest()); err != nil || !ok {
		t.Fatalf("Unpin: %v, %v", ok, err)
	}
	if ok, err := x.Pinned(ctx, ps[0].Digest()); err != nil || ok {
		t.Fatalf("Pinned after Unpin: %v, %v", ok, err)
	}
	// Delete takes the pin with the path.
	if _, err := x.Pin(ctx, ps[1].Digest()); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Delete(ctx, ps[1].Digest()); err != nil {
		t.Fatal(err)
	}
	if ok, err := x.Pinned(ctx, ps[1].Digest()); err != nil || ok {
		t.Fatalf("Pinned after Delete: %v, %v", ok, err)
	}
}

func TestAccessTimes(t *testing.T) {
	ctx := context.Background()
	s, x, c := clockedStore(t)
	ps := putPaths(t, s, x, 1)
	d := ps[0].Digest()
	t0 := c.now()
	if got, ok, err := x.LastAccess(ctx, d); err != nil || !ok || !got.Equal(t0) {
		t.Fatalf("LastAccess after Put = %v, %v, %v; want %v", got, ok, err, t0)
	}
	// A read within AccessRefresh of the recorded time is not noted.
	c.advance(store.AccessRefresh / 2)
	x.RecordAccess(d)
	if err := x.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := x.LastAccess(ctx, d); !got.Equal(t0) {
		t.Fatalf("LastAccess after a read within the refresh time = %v; want %v", got, t0)
	}
	// Later ones are, once flushed, and a fresh index reads them back.
	c.advance(store.AccessRefresh)
	t1 := c.now()
	x.RecordAccess(d)
	if got, _, _ := x.LastAccess(ctx, d); !got.Equal(t1) {
		t.Fatalf("LastAccess with a read pending = %v; want %v", got, t1)
	}
	if got, _, _ := store.NewIndex(s, s).LastAccess(ctx, d); !got.Equal(t0) {
		t.Fatalf("LastAccess before the flush, fresh index = %v; want %v", got, t0)
	}
	if err := x.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := store.NewIndex(s, s).LastAccess(ctx, d); !got.Equal(t1) {
		t.Fatalf("LastAccess after the flush, fresh index = %v; want %v", got, t1)
	}
	// A read of a path deleted before the flush writes nothing.
	c.advance(2 * store.AccessRefresh)
	x.RecordAccess(d)
	if _, err := x.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	x.RecordAccess(d) // after the delete: dropped at the flush
	if err := x.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.NewIndex(s, s).LastAccess(ctx, d); err != nil || ok {
		t.Fatalf("LastAccess of a deleted path = %v, %v; want none", ok, err)
	}
}

func TestExpire(t *testing.T) {
	ctx := context.Background()
	day := 24 * time.Hour
	tests := []struct {
		name string
		// setup runs on 5 paths put a day apart (0 oldest) at day 0..4;
		// the clock then stands at day 4.
		setup  func(t *testing.T, x *store.Index, ps []*store.PathInfo, c *fakeClock)
		r      func(ps []*store.PathInfo) store.Retention
		want   []int // indexes deleted, in order
		fits   bool
		pinned int
	}{
		{
			name: "nothing to do",
			r:    func([]*store.PathInfo) store.Retention { return store.Retention{MaxAge: 30 * day} },
			fits: true,
		},
		{
			name: "by age",
			r:    func([]*store.PathInfo) store.Retention { return store.Retention{MaxAge: 2*day + time.Hour} },
			want: []int{0, 1},
			fits: true,
		},
		{
			name: "by age, a download refreshes",
			setup: func(t *testing.T, x *store.Index, ps []*store.PathInfo, c *fakeClock) {
				x.RecordAccess(ps[0].Digest())
			},
			r:    func([]*store.PathInfo) store.Retention { return store.Retention{MaxAge: 2*day + time.Hour} },
			want: []int{1},
			fits: true,
		},
		{
			name: "by age, pins respected",
			setup: func(t *testing.T, x *store.Index, ps []*store.PathInfo, c *fakeClock) {
				if _, err := x.Pin(ctx, ps[1].Digest()); err != nil {
					t.Fatal(err)
				}
			},
			r:      func([]*store.PathInfo) store.Retention { return store.Retention{MaxAge: 2*day + time.Hour} },
			want:   []int{0},
			fits:   true,
			pinned: 1,
		},
		{
			name: "by size, least recently used first",
			setup: func(t *testing.T, x *store.Index, ps []*store.PathInfo, c *fakeClock) {
				x.RecordAccess(ps[0].Digest()) // now the most recent
			},
			r: func(ps []*store.PathInfo) store.Retention {
				return store.Retention{MaxSize: ps[0].NARSize + ps[3].NARSize + ps[4].NARSize}
			},
			want: []int{1, 2},
			fits: true,
		},
		{
			name: "by size, pins respected, cannot fit",
			setup: func(t *testing.T, x *store.Index, ps []*store.PathInfo, c *fakeClock) {
				for _, i := range []int{0, 1} {
					if _, err := x.Pin(ctx, ps[i].Digest()); err != nil {
						t.Fatal(err)
					}
				}
			},
			r:      func(ps []*store.PathInfo) store.Retention { return store.Retention{MaxSize: ps[0].NARSize} },
			want:   []int{2, 3, 4},
			fits:   false,
			pinned: 2,
		},
		{
			name: "age then size",
			r: func(ps []*store.PathInfo) store.Retention {
				return store.Retention{MaxAge: 3*day + time.Hour, MaxSize: ps[4].NARSize}
			},
			want: []int{0, 1, 2, 3},
			fits: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dry := range []bool{true, false} {
				s, x, c := clockedStore(t)
				var ps []*store.PathInfo
				for i := range 5 {
					ps = append(ps, putPath(t, s, x, i))
					if i < 4 {
						c.advance(day)
					}
				}
				if tt.setup != nil {
					tt.setup(t, x, ps, c)
				}
				before := present(t, x)
				r := tt.r(ps)
				r.DryRun = dry
				res, err := x.Expire(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, i := range tt.want {
					want = append(want, ps[i].Path)
				}
				if !slices.Equal(names(res.Deleted), want) {
					t.Fatalf("dry run %v: deleted %v; want %v", dry, names(res.Deleted), want)
				}
				if res.Fits != tt.fits || res.Pinned != tt.pinned || res.Paths != 5-len(want) {
					t.Errorf("dry run %v: result %+v; want fits %v, %d pinned, %d paths", dry, res, tt.fits, tt.pinned, 5-len(want))
				}
				after := present(t, x)
				if dry {
					if !slices.Equal(before, after) {
						t.Errorf("a dry run deleted paths: %v, then %v", before, after)
					}
					continue
				}
				for _, p := range want {
					if slices.Contains(after, p) {
						t.Errorf("%s still present", p)
					}
				}
				if len(after) != 5-len(want) {
					t.Errorf("%d paths left; want %d", len(after), 5-len(want))
				}
			}
		})
	}
}

// TestExpireFirstSeen: paths without an access time (a store from before
// access times were kept) count as accessed at their first Expire, which
// records it, and age from there.
func TestExpireFirstSeen(t *testing.T) {
	ctx := context.Background()
	s, x, c := clockedStore(t)
	ps := putPaths(t, s, x, 3)
	// Forget the access times Put wrote, as a store from before them.
	var keys [][]byte
	if err := s.ScanMeta(ctx, 'A', nil, func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d access records after 3 puts", len(keys))
	}
	for _, k := range keys {
		if err := s.SetMeta(ctx, castore.MetaRecord{Kind: 'A', Key: k, Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(365 * 24 * time.Hour)
	x = store.NewIndex(s, s, store.WithClock(c.now))
	res, err := x.Expire(ctx, store.Retention{MaxAge: time.Hour})
	if err != nil || len(res.Deleted) != 0 || res.FirstSeen != 3 {
		t.Fatalf("first Expire: %+v, %v; want nothing deleted, 3 first seen", res, err)
	}
	c.advance(2 * time.Hour)
	x.RecordAccess(ps[2].Digest())
	c.advance(2 * time.Hour)
	res, err = x.Expire(ctx, store.Retention{MaxAge: 3 * time.Hour})
	if err != nil || res.FirstSeen != 0 || !slices.Equal(names(res.Deleted), []string{ps[0].Path, ps[1].Path}) {
		t.Fatalf("second Expire: %+v, %v; want %s and %s deleted", res, err, ps[0].Path, ps[1].Path)
	}
}

func TestRetentionValidate(t *testing.T) {
	_, x, _ := clockedStore(t)
	if _, err := x.Expire(context.Background(), store.Retention{MaxAge: -time.Hour}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Expire with a negative age: %v; want ErrInvalid", err)
	}
}
