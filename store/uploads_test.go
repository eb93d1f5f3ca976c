package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/store"
)

// TestPendingUploads: a pending upload recorded through one index is
// found by URL and by NAR hash through another on the same records (two
// servers on one PostgreSQL database; one Pebble store for the embedded
// case), until it expires, is replaced or is deleted.
func TestPendingUploads(t *testing.T) {
	ctx := context.Background()
	open := map[string]func(t *testing.T) (writer, reader *store.Index){
		"pebble": func(t *testing.T) (*store.Index, *store.Index) {
			s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return store.NewIndex(s, s), store.NewIndex(s, s)
		},
		"postgres": func(t *testing.T) (*store.Index, *store.Index) {
			url, dir := testpg.New(t), t.TempDir()
			var xs []*store.Index
			for range 2 {
				s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				xs = append(xs, store.NewIndex(s, s))
			}
			return xs[0], xs[1]
		},
	}
	for name, open := range open {
		t.Run(name, func(t *testing.T) {
			w, r := open(t)
			h1, h2, h3 := [32]byte{1}, [32]byte{2}, [32]byte{3}
			later := time.Now().Add(time.Hour)
			u := store.PendingUpload{URL: "nar/a.nar.xz", Root: castore.Entry{Kind: castore.KindSymlink, Target: "x"},
				NARSize: 120, NARSha256: h1, FileHash: h3, FileSize: 99, Expires: later}
			if err := w.PutPendingUpload(ctx, u); err != nil {
				t.Fatal(err)
			}
			expired := store.PendingUpload{URL: "nar/old.nar", NARSha256: h3, Root: castore.Entry{Kind: castore.KindSymlink, Target: "y"}, Expires: time.Now().Add(-time.Second)}
			if err := w.PutPendingUpload(ctx, expired); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				url  string
				sum  [32]byte
				want bool
			}{
				{"nar/a.nar.xz", h2, true},   // by URL
				{"nar/other.nar", h1, true},  // by NAR hash
				{"nar/other.nar", h2, false}, // neither
				{"nar/old.nar", h3, false},   // expired
			} {
				got, err := r.PendingUpload(ctx, tc.url, tc.sum)
				switch {
				case tc.want && (err != nil || got.URL != u.URL || got.NARSha256 != h1 || got.FileSize != 99 || got.Root.Target != "x"):
					t.Errorf("PendingUpload(%s, %x) = %+v, %v; want the upload at %s", tc.url, tc.sum[:1], got, err, u.URL)
				case !tc.want && !errors.Is(err, store.ErrNotFound):
					t.Errorf("PendingUpload(%s, %x) = %+v, %v; want ErrNotFound", tc.url, tc.sum[:1], got, err)
				}
			}
			if n, err := w.PrunePendingUploads(ctx, time.Now()); err != nil || n != 1 {
				t.Errorf("PrunePendingUploads = %d, %v; want the expired one", n, err)
			}
			// Put again under the same URL with another NAR: the old hash
			// no longer finds it.
			u.NARSha256 = h2
			if err := w.PutPendingUpload(ctx, u); err != nil {
				t.Fatal(err)
			}
			if _, err := r.PendingUpload(ctx, "nar/other.nar", h1); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("by the replaced NAR hash: %v, want ErrNotFound", err)
			}
			if err := r.DeletePendingUpload(ctx, u.URL, h1); err != nil {
				t.Fatal(err)
			}
			if _, err := w.PendingUpload(ctx, "nar/other.nar", h2); err != nil {
				t.Errorf("after deleting with the old hash: %v, want the upload kept", err)
			}
			if err := r.DeletePendingUpload(ctx, u.URL, h2); err != nil {
				t.Fatal(err)
			}
			if _, err := w.PendingUpload(ctx, u.URL, h2); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("after deleting: %v, want ErrNotFound", err)
			}
		})
	}
}
