package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// TestKinds: the Nix layer's key kinds keep the bytes stores on disk were
// written with, and castore accepts them as records while refusing its
// own kinds.
func TestKinds(t *testing.T) {
	ctx := context.Background()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "s"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []struct {
		name string
		kind byte
		want byte
	}{
		{"KindPathInfo", store.KindPathInfo, 'p'},
		{"KindNARHash", store.KindNARHash, 'n'},
		{"KindNARFile", store.KindNARFile, 'u'},
	} {
		if k.kind != k.want {
			t.Errorf("%s = %q, stores on disk use %q", k.name, k.kind, k.want)
		}
		if err := s.SetMeta(ctx, castore.MetaRecord{Kind: k.kind, Key: []byte("k"), Value: []byte(k.name)}); err != nil {
			t.Errorf("SetMeta of kind %s: %v", k.name, err)
		}
		if v, err := s.GetMeta(ctx, k.kind, []byte("k")); err != nil || string(v) != k.name {
			t.Errorf("GetMeta of kind %s = %q, %v", k.name, v, err)
		}
	}
	for _, own := range []byte{'c', 'b', 'd', 'm'} {
		if err := s.SetMeta(ctx, castore.MetaRecord{Kind: own, Key: []byte("k"), Value: []byte("v")}); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("SetMeta of castore's kind %q: %v, want ErrInvalid", own, err)
		}
	}
}
