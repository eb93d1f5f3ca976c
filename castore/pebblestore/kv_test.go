package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nixcas/nixcas/internal/testpg"
)

// testKV opens the database of a store of each kind: "pebble" and
// "postgres" (a private PostgreSQL).
func testKV(t *testing.T, kind string) kvDB {
	t.Helper()
	var (
		s   *Store
		err error
	)
	switch kind {
	case "pebble":
		s, err = Open(t.TempDir(), Options{})
	case "postgres":
		s, err = OpenPostgres(context.Background(), testpg.New(t), t.TempDir(), Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.db
}

// kvValue returns the value of key, or nil when it is missing.
func kvValue(t *testing.T, db kvDB, key string) []byte {
	t.Helper()
	var v []byte
	err := db.get(context.Background(), []byte(key), func(b []byte) error {
		v = append([]byte{}, b...)
		return nil
	})
	if errors.Is(err, errNoKey) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPostgresBatchConflict: a batch one of whose inserts meets an
// existing key applies none of its writes, however it commits (one
// pipeline, after a read in its transaction, synced, or with a use
// record); a batch without conflict applies its writes in order, a key
// written several times ending as its last write says.
func TestPostgresBatchConflict(t *testing.T) {
	ctx := context.Background()
	db := testKV(t, "postgres")
	if err := db.set(ctx, []byte("x-old"), []byte("old"), false); err != nil {
		t.Fatal(err)
	}
	if err := db.set(ctx, []byte("x-del"), []byte("keep"), false); err != nil {
		t.Fatal(err)
	}
	before, err := db.counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"pipeline", "after a read", "synced", "with a use"} {
		t.Run(how, func(t *testing.T) {
			b := db.newBatch()
			defer b.close()
			if how == "after a read" {
				if err := b.get(ctx, []byte("x-old"), func([]byte) error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
			b.insert([]byte("x-new"), []byte("new"))
			b.insert([]byte("x-old"), []byte("other"))
			b.set([]byte("x-set"), []byte("set"))
			b.delete([]byte("x-del"))
			b.addCounters([]uint64{counterChunks: 5})
			use := []byte("R-use-" + how)
			switch how {
			case "synced":
				err = b.commit(ctx, true)
			case "with a use":
				_, err = db.recordUse(ctx, use, nil, b)
			default:
				err = b.commit(ctx, false)
			}
			if !errors.Is(err, errKeyExists) {
				t.Fatalf("commit = %v, want errKeyExists", err)
			}
			for key, want := range map[string]string{"x-old": "old", "x-del": "keep", "x-new": "", "x-set": "", string(use): ""} {
				if got := kvValue(t, db, key); string(got) != want || (want == "") != (got == nil) {
					t.Errorf("%s = %q after the failed commit, want %q", key, got, want)
				}
			}
			if c, err := db.counters(ctx); err != nil || c != before {
				t.Errorf("counters = %v, %v after the failed commit, want %v", c, err, before)
			}
		})
	}

	b := db.newBatch()
	defer b.close()
	b.insert([]byte("y-new"), []byte("new"))
	b.set([]byte("y-a"), []byte("1"))
	b.delete([]byte("y-a"))
	b.set([]byte("y-a"), []byte("2"))
	b.set([]byte("y-b"), []byte("1"))
	b.delete([]byte("y-b"))
	b.delete([]byte("x-del"))
	b.addCounters([]uint64{counterChunks: 5})
	if _, err := db.recordUse(ctx, []byte("R-use-ok"), []byte("y-new"), b); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"y-new": "new", "y-a": "2", "y-b": "", "x-del": "", "R-use-ok": "", "x-old": "old"} {
		got := kvValue(t, db, key)
		if string(got) != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if got := kvValue(t, db, "R-use-ok"); got == nil {
		t.Error("the use record was not written")
	}
	if c, err := db.counters(ctx); err != nil || c[counterChunks] != before[counterChunks]+5 {
		t.Errorf("chunks counter = %d, %v, want %d", c[counterChunks], err, before[counterChunks]+5)
	}
}

// TestPostgresGetMany: getMany reports each present key at each of its
// places, with its value, and no missing key, over more keys than one
// query reads, on either database, and in a batch as out of it; hasMany
// reports the same keys, without values, and getManySmall the values of
// at most 3 bytes and the sizes of all.
func TestPostgresGetMany(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{"pebble", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			db := testKV(t, kind)
			b := db.newBatch()
			for i := range pgGetPage + 100 {
				if i%3 != 0 {
					b.set(fmt.Appendf(nil, "k%05d", i), fmt.Appendf(nil, "v%d", i))
				}
			}
			if err := b.commit(ctx, false); err != nil {
				t.Fatal(err)
			}
			b.close()
			var keys [][]byte
			for i := range pgGetPage + 100 {
				keys = append(keys, fmt.Appendf(nil, "k%05d", i))
			}
			keys = append(keys, []byte("k00001"), []byte("k00003"), []byte("absent"))
			for _, how := range []string{"db", "batch", "hasMany", "small", "batch small"} {
				got := make([][]byte, len(keys))
				calls := 0
				fn := func(i int, v []byte) error {
					calls++
					if got[i] != nil {
						t.Errorf("key %d (%s) reported twice", i, keys[i])
					}
					got[i] = bytes.Clone(v)
					return nil
				}
				var err error
				switch how {
				case "batch":
					b := db.newBatch()
					err = b.getMany(ctx, keys, fn)
					b.close()
				case "hasMany":
					err = db.hasMany(ctx, keys, func(i int) error { return fn(i, []byte("present")) })
				case "small", "batch small":
					// A value's size instead of a value longer than 3.
					small := func(i int, v []byte, size int) error {
						if v == nil {
							v = fmt.Appendf(nil, "%d bytes", size)
						} else if len(v) != size {
							t.Errorf("key %s: value %q of size %d", keys[i], v, size)
						}
						return fn(i, v)
					}
					if how == "small" {
						err = db.getManySmall(ctx, keys, 3, small)
					} else {
						b := db.newBatch()
						err = b.getManySmall(ctx, keys, 3, small)
						b.close()
					}
				default:
					err = db.getMany(ctx, keys, fn)
				}
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				for i, k := range keys {
					var n int
					var w []byte
					if _, err := fmt.Sscanf(string(k), "k%05d", &n); err == nil && n%3 != 0 {
						w = fmt.Appendf(nil, "v%d", n)
						switch how {
						case "hasMany":
							w = []byte("present")
						case "small", "batch small":
							if len(w) > 3 {
								w = fmt.Appendf(nil, "%d bytes", len(w))
							}
						}
						want++
					}
					if !bytes.Equal(got[i], w) {
						t.Errorf("%s: key %s = %q, want %q", how, k, got[i], w)
					}
				}
				if calls != want {
					t.Errorf("%s: %d calls, want %d", how, calls, want)
				}
			}
		})
	}
}

// TestGetManySmallLarge: getManySmall gives the size of a large value
// without it, and the value itself when the bound allows, also for a
// value Pebble has moved to a blob file (flushed, value separation) and
// one PostgreSQL keeps out of line.
func TestGetManySmallLarge(t *testing.T) {
	ctx := context.Background()
	large := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	for _, kind := range []string{"pebble", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			db := testKV(t, kind)
			b := db.newBatch()
			b.set([]byte("large"), large)
			b.set([]byte("small"), []byte("xy"))
			if err := b.commit(ctx, false); err != nil {
				t.Fatal(err)
			}
			b.close()
			if p, ok := db.(*pebbleKV); ok {
				if err := p.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			keys := [][]byte{[]byte("large"), []byte("small"), []byte("absent")}
			for _, n := range []int{2, len(large)} {
				got := map[string][]byte{}
				sizes := map[string]int{}
				err := db.getManySmall(ctx, keys, n, func(i int, v []byte, size int) error {
					got[string(keys[i])], sizes[string(keys[i])] = bytes.Clone(v), size
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if sizes["large"] != len(large) || sizes["small"] != 2 || len(sizes) != 2 {
					t.Errorf("n=%d: sizes %v, want large %d, small 2 and nothing else", n, sizes, len(large))
				}
				if !bytes.Equal(got["small"], []byte("xy")) {
					t.Errorf("n=%d: small = %q", n, got["small"])
				}
				if want := n >= len(large); (got["large"] != nil) != want || want && !bytes.Equal(got["large"], large) {
					t.Errorf("n=%d: large read = %t (%d bytes), want %t", n, got["large"] != nil, len(got["large"]), want)
				}
			}
		})
	}
}
