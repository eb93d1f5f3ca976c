package httpcache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/nixcas/nixcas/store"
)

func testDigest(i int) store.PathDigest {
	var d store.PathDigest
	binary.BigEndian.PutUint64(d[12:], uint64(i))
	binary.LittleEndian.PutUint32(d[:4], uint32(i)) // spread over the shards
	return d
}

// TestNarInfoCacheEpoch: a narinfo read before a change (get, then the
// change, then add) is not kept; one read after it is.
func TestNarInfoCacheEpoch(t *testing.T) {
	c := newNarInfoCache(1<<20, 0)
	d := testDigest(1)
	text, epoch := c.get(d)
	if text != nil {
		t.Fatalf("empty cache: got %q", text)
	}
	c.invalidate(d) // the path changes while its old narinfo is rendered
	c.add(d, []byte("old"), epoch)
	if text, _ := c.get(d); text != nil {
		t.Fatalf("narinfo rendered before a change was kept: %q", text)
	}
	_, epoch = c.get(d)
	c.add(d, []byte("new"), epoch)
	if text, _ := c.get(d); string(text) != "new" {
		t.Fatalf("got %q, want new", text)
	}
	// Invalidating forgets it, in either generation.
	c.invalidate(d)
	if text, _ := c.get(d); text != nil {
		t.Fatalf("after invalidate: %q", text)
	}
	if st := c.entries.Stats(); st.Bytes != 0 {
		t.Errorf("%d bytes held with nothing kept", st.Bytes)
	}
}

// TestNarInfoCacheBound: however many narinfos are added, the bytes held
// stay within the bound; the most recently used stay.
func TestNarInfoCacheBound(t *testing.T) {
	const max = 64 << 10
	c := newNarInfoCache(max, 0)
	text := bytes.Repeat([]byte("x"), 500)
	hot := testDigest(0)
	for i := range 10000 {
		_, e := c.get(testDigest(i))
		c.add(testDigest(i), text, e)
		if got, _ := c.get(hot); got == nil && i > 0 {
			t.Fatalf("after %d adds the narinfo used on every add was dropped", i)
		}
		st := c.entries.Stats()
		if st.Bytes > max || st.Bytes != int64(st.Entries)*(500+narInfoEntryOverhead) {
			t.Fatalf("after %d adds: %+v, bound %d", i, st, max)
		}
	}
	// Larger than a generation: not kept.
	big := testDigest(-1)
	_, e := c.get(big)
	c.add(big, bytes.Repeat([]byte("y"), max), e)
	if got, _ := c.get(big); got != nil {
		t.Errorf("a narinfo larger than the cache was kept")
	}
}

// TestNarInfoCacheTTL: with a TTL, a kept narinfo is served until it is
// that old, then read again.
func TestNarInfoCacheTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprint(ttl), func(t *testing.T) {
			now := time.Unix(1e9, 0)
			c := newNarInfoCache(1<<20, ttl)
			c.now = func() time.Time { return now }
			d := testDigest(7)
			_, e := c.get(d)
			c.add(d, []byte("text"), e)
			now = now.Add(999 * time.Millisecond)
			if got, _ := c.get(d); string(got) != "text" {
				t.Fatalf("before the TTL: %q", got)
			}
			now = now.Add(time.Millisecond)
			got, _ := c.get(d)
			if ttl > 0 && got != nil {
				t.Errorf("served %q at the TTL", got)
			}
			if ttl == 0 && string(got) != "text" {
				t.Errorf("no TTL: got %q", got)
			}
		})
	}
}
