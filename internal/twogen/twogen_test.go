package twogen_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/internal/twogen"
)

func shardOf(k int) uint32 { return uint32(k) }

// TestBound: however many entries are added, the bytes held stay within
// the bound and add up; an entry used after every add stays; one larger
// than a generation's share is not kept.
func TestBound(t *testing.T) {
	const max, size = 64 << 10, 500
	c := twogen.New[int, string](max, shardOf, nil)
	const hot = 0
	c.Add(hot, "hot", size, nil)
	for i := 1; i < 10000; i++ {
		if _, ok := c.Get(i); ok {
			t.Fatalf("%d found before it was added", i)
		}
		c.Add(i, fmt.Sprint(i), size, nil)
		if v, ok := c.Get(hot); !ok || v != "hot" {
			t.Fatalf("after %d adds the entry used on every add was dropped", i)
		}
		st := c.Stats()
		if st.Bytes > max || st.Bytes != int64(st.Entries)*size {
			t.Fatalf("after %d adds: %+v; bound %d, %d bytes an entry", i, st, max, size)
		}
	}
	st := c.Stats()
	if st.Entries < max/size/2 || st.Entries >= 10000 {
		t.Fatalf("after 10000 adds: %+v; want at least a generation's worth kept, most dropped", st)
	}
	if st.Hits != 9999 || st.Misses != 9999 {
		t.Fatalf("%+v; want 9999 hits and 9999 misses", st)
	}
	// Larger than a generation's share: not kept.
	c.Add(-1, "big", max/twogen.Shards/2+1, nil)
	if _, ok := c.Get(-1); ok {
		t.Errorf("an entry larger than a generation's share was kept")
	}
	c.Add(-2, "fits", max/twogen.Shards/2, nil)
	if _, ok := c.Get(-2); !ok {
		t.Errorf("an entry of exactly a generation's share was not kept")
	}
}

// TestAddRemove: Add replaces, Remove forgets in either generation,
// keep false keeps nothing, a stale entry is reported missing and
// dropped, and a cache of 0 bytes keeps nothing.
func TestAddRemove(t *testing.T) {
	c := twogen.New[int, string](1<<20, shardOf, func(v string) bool { return v == "stale" })
	c.Add(1, "a", 10, nil)
	c.Add(1, "b", 20, nil)
	if v, ok := c.Get(1); v != "b" || !ok {
		t.Fatalf("after a replacing add: %q, %v", v, ok)
	}
	if st := c.Stats(); st.Bytes != 20 || st.Entries != 1 {
		t.Fatalf("after a replacing add: %+v", st)
	}
	c.Remove(1)
	if _, ok := c.Get(1); ok {
		t.Fatal("found after Remove")
	}
	c.Add(2, "x", 10, func() bool { return false })
	if _, ok := c.Get(2); ok {
		t.Fatal("kept though keep said no")
	}
	c.Add(3, "stale", 10, nil)
	if _, ok := c.Get(3); ok {
		t.Fatal("a stale entry was served")
	}
	if st := c.Stats(); st.Bytes != 0 || st.Entries != 0 {
		t.Fatalf("with nothing kept: %+v", st)
	}

	// In the previous generation: found (and moved up), and removed.
	small := twogen.New[int, string](twogen.Shards*2*10, func(int) uint32 { return 0 }, nil)
	small.Add(1, "a", 10, nil)
	small.Add(2, "b", 10, nil) // turns: 1 is in the previous generation
	if v, ok := small.Get(1); !ok || v != "a" {
		t.Fatalf("from the previous generation: %q, %v", v, ok)
	}
	small.Add(3, "c", 10, nil) // turns: 1 is in the previous generation again
	small.Remove(1)
	if _, ok := small.Get(1); ok {
		t.Fatal("found after Remove from the previous generation")
	}
	if st := small.Stats(); st.Bytes != 10 || st.Entries != 1 {
		t.Fatalf("one entry of 10 bytes left: %+v", st)
	}

	none := twogen.New[int, string](0, shardOf, nil)
	none.Add(1, "a", 1, nil)
	if _, ok := none.Get(1); ok {
		t.Fatal("a cache of 0 bytes kept an entry")
	}
}

// TestConcurrent: look-ups, adds and removes from many goroutines at
// once keep the bound (run with -race).
func TestConcurrent(t *testing.T) {
	const max, size = 16 << 10, 100
	c := twogen.New[int, int](max, shardOf, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := (i*7 + g) % 500
				if v, ok := c.Get(k); ok && v != k {
					t.Errorf("%d holds %d", k, v)
				}
				c.Add(k, k, size, nil)
				if i%10 == 0 {
					c.Remove(k + 1)
				}
			}
		})
	}
	wg.Wait()
	if st := c.Stats(); st.Bytes > max || st.Bytes != int64(st.Entries)*size {
		t.Fatalf("%+v; bound %d", st, max)
	}
}

// BenchmarkGetParallel: concurrent look-ups of held entries.
func BenchmarkGetParallel(b *testing.B) {
	c := twogen.New[int, int](64<<20, shardOf, nil)
	for i := range 1024 {
		c.Add(i, i, 100, nil)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := c.Get(i % 1024); !ok {
				b.Error("miss")
				return
			}
			i += 7
		}
	})
}

// TestShardSize: a shard fills two cache lines of 64 bytes exactly.
func TestShardSize(t *testing.T) {
	if n := twogen.ShardSize(); n != 128 {
		t.Fatalf("a shard is %d bytes, want 128", n)
	}
}

// TestAddRefusedForgets: an Add that is refused (too large, or keep
// false) leaves nothing under its key, not the value it would replace;
// entries of no size still count, so they turn generations.
func TestAddRefusedForgets(t *testing.T) {
	const max = 64 << 10
	c := twogen.New[int, string](max, shardOf, nil)
	c.Add(1, "old", 10, nil)
	c.Add(1, "new", max, nil)
	if v, ok := c.Get(1); ok {
		t.Errorf("a refused, too large add left %q", v)
	}
	c.Add(2, "old", 10, nil)
	c.Add(2, "new", 10, func() bool { return false })
	if v, ok := c.Get(2); ok {
		t.Errorf("an add refused by keep left %q", v)
	}
	for i := range 100000 {
		c.Add(i, "", 0, nil)
	}
	if st := c.Stats(); st.Entries > max {
		t.Errorf("100000 entries of no size in a cache of %d bytes: %+v kept", max, st)
	}
}
