package client_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
)

var smallCache = pebblestore.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20}

// TestOpenCacheInUse opens a cache that is already open: after the wait,
// a private cache beside it, with a note, removed on Close.
func TestOpenCacheInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	shared, err := client.OpenCache(t.Context(), dir, client.CacheOptions{Pebble: smallCache})
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	if shared.Private || shared.Dir() != dir {
		t.Fatalf("first open: private %v in %s, want the shared cache %s", shared.Private, shared.Dir(), dir)
	}

	var notes []string
	private, err := client.OpenCache(t.Context(), dir, client.CacheOptions{Pebble: smallCache, Wait: 100 * time.Millisecond, Note: func(s string) { notes = append(notes, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if !private.Private || filepath.Dir(private.Dir()) != filepath.Dir(dir) || !strings.HasPrefix(filepath.Base(private.Dir()), "cache.private-") {
		t.Fatalf("second open: private %v in %s, want a private cache beside %s", private.Private, private.Dir(), dir)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], dir) || !strings.Contains(notes[0], private.Dir()) || !strings.Contains(notes[0], "private chunk cache") {
		t.Errorf("notes %q: want one naming %s and %s", notes, dir, private.Dir())
	}
	// The private cache works as a store.
	c := castore.NewChunk([]byte("a chunk"))
	if _, err := private.PutChunk(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if ok, err := private.HasChunk(t.Context(), c.Digest()); err != nil || !ok {
		t.Fatalf("HasChunk after PutChunk: %v, %v", ok, err)
	}
	if err := private.Close(); err != nil {
		t.Fatal(err)
	}
	if err := private.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(private.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private cache %s left after Close: %v", private.Dir(), err)
	}
}

// TestOpenCacheWaits: a cache released within the wait is opened shared.
func TestOpenCacheWaits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	first, err := client.OpenCache(t.Context(), dir, client.CacheOptions{Pebble: smallCache})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		first.Close()
	}()
	second, err := client.OpenCache(t.Context(), dir, client.CacheOptions{Pebble: smallCache, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Private {
		t.Errorf("cache released during the wait: opened a private one (%s)", second.Dir())
	}
}

// TestOpenCacheOtherErrors: errors other than the cache being in use are
// returned, without a private cache.
func TestOpenCacheOtherErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := client.OpenCache(t.Context(), filepath.Join(file, "cache"), client.CacheOptions{Pebble: smallCache})
	if err == nil {
		c.Close()
		t.Fatal("OpenCache under a regular file succeeded")
	}
	if errors.Is(err, pebblestore.ErrLocked) {
		t.Errorf("error %v is ErrLocked", err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "*private*"))
	if len(left) > 0 {
		t.Errorf("private caches made: %v", left)
	}
}
