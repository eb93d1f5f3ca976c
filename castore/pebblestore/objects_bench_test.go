package pebblestore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleObjects keeps objects as values of a Pebble database with value
// separation: the alternative to DirObjects that BenchmarkObjectStores
// measures.
type pebbleObjects struct{ db *pebble.DB }

func (p pebbleObjects) PutObject(_ context.Context, name string, data []byte) error {
	return p.db.Set([]byte(name), data, pebble.NoSync)
}

func (p pebbleObjects) GetObject(_ context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	v, closer, err := p.db.Get([]byte(name))
	if err != nil {
		return dst, err
	}
	defer closer.Close()
	if n < 0 {
		n = int64(len(v)) - off
	}
	return append(dst, v[off:off+n]...), nil
}

// BenchmarkObjectStores writes 256 frame-sized objects (512 KiB, about a
// compressed 1 MiB hot frame), synced in batches of eight as the packer
// does, reads them all back, then
// deletes half and reports the disk space left, for files (DirObjects)
// and for Pebble values with value separation.
func BenchmarkObjectStores(b *testing.B) {
	const n, size = 256, 512 << 10
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%064x", i+1)
	}
	ctx := context.Background()
	run := func(b *testing.B, open func(dir string) (ObjectStore, func(), func(name string) error)) {
		for b.Loop() {
			dir := b.TempDir()
			o, closeFn, del := open(dir)
			for i, name := range names {
				if err := o.PutObject(ctx, name, data); err != nil {
					b.Fatal(err)
				}
				if i%8 == 7 {
					if err := o.SyncObjects(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			var buf []byte
			for _, name := range names {
				var err error
				if buf, err = o.GetObject(ctx, name, 0, -1, buf[:0]); err != nil || len(buf) != size {
					b.Fatal(err)
				}
			}
			for _, name := range names[:n/2] {
				if err := del(name); err != nil {
					b.Fatal(err)
				}
			}
			closeFn()
			du, err := diskUsage(dir)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(du)/float64(n/2*size), "disk/live")
		}
		b.SetBytes(n * size)
	}
	b.Run("files", func(b *testing.B) {
		run(b, func(dir string) (ObjectStore, func(), func(string) error) {
			o := NewDirObjects(filepath.Join(dir, "frames"))
			return o, func() {}, func(name string) error { return o.DeleteObject(ctx, name) }
		})
	})
	b.Run("pebble", func(b *testing.B) {
		run(b, func(dir string) (ObjectStore, func(), func(string) error) {
			opts := DefaultOptions
			fs := newStoreFS(false, pebbleLogger)
			cache := pebble.NewCache(8 << 20)
			defer cache.Unref()
			db, err := pebble.Open(dir, opts.pebbleOptions(cache, fs))
			if err != nil {
				b.Fatal(err)
			}
			return pebbleObjects{db}, func() {
					db.Flush()
					db.Compact(ctx, []byte{0}, []byte{0xff}, true)
					db.Close()
				}, func(name string) error {
					return db.Delete([]byte(name), pebble.Sync)
				}
		})
	})
}

// The rest of ObjectStore, for pebbleObjects.
func (p pebbleObjects) SyncObjects(context.Context) error { return p.db.LogData(nil, pebble.Sync) }

func (p pebbleObjects) DeleteObject(_ context.Context, name string) error {
	return p.db.Delete([]byte(name), pebble.Sync)
}

func (p pebbleObjects) ListObjects(context.Context, func(string, int64) error) error { return nil }
