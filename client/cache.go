package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

// CacheOptions configure OpenCache.
type CacheOptions struct {
	// Pebble configures the database.
	Pebble pebblestore.Options
	// Wait is how long to wait for a cache another process has open
	// before using a private one (default 1 s; negative: do not wait).
	Wait time.Duration
	// Note, when set, is told in one line when a private cache is used
	// and why.
	Note func(string)
}

// Cache is the local chunk cache a client command opened: the shared one
// in its directory, or, while another process has that open, a private
// temporary one. It is the store itself (castore.Store and the powers of
// the Pebble store), and is passed as such: Close also removes a private
// cache.
type Cache struct {
	*cacheStore
	// Private is set when the shared cache was in use by another process:
	// this cache is a temporary directory beside it, removed by Close.
	Private bool

	closeOnce sync.Once
	closeErr  error
}

// cacheStore names the store a Cache embeds without exporting the field.
type cacheStore = pebblestore.Store

// Unwrap returns the Pebble store underneath (see castore.As).
func (c *Cache) Unwrap() any { return c.cacheStore }

// cachePoll is how often OpenCache tries the shared cache again.
const cachePoll = 50 * time.Millisecond

// OpenCache opens the chunk cache in dir. A Pebble database is open in one
// process at a time, and client commands run side by side (a post-build
// hook pushes every build, a proxy runs all day), so when another process
// has dir open OpenCache waits up to o.Wait for it, then opens a private
// cache in a new temporary directory beside dir instead: the command then
// works as it would with an empty cache (a push chunks its trees there as
// always, the server still decides what to send; a pull fetches every
// chunk it needs), and Close removes it. Other errors are returned as
// they are.
func OpenCache(ctx context.Context, dir string, o CacheOptions) (*Cache, error) {
	if o.Wait == 0 {
		o.Wait = time.Second
	}
	deadline := time.Now().Add(o.Wait)
	for {
		s, err := pebblestore.Open(dir, o.Pebble)
		if err == nil {
			return &Cache{cacheStore: s}, nil
		}
		if !errors.Is(err, pebblestore.ErrLocked) {
			return nil, fmt.Errorf("client: chunk cache: %w", err)
		}
		if !time.Now().Before(deadline) {
			return openPrivateCache(dir, o, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cachePoll):
		}
	}
}

// openPrivateCache opens a temporary cache beside dir, which locked says
// is in use.
func openPrivateCache(dir string, o CacheOptions, locked error) (*Cache, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), filepath.Base(filepath.Clean(dir))+".private-*")
	if err != nil {
		return nil, fmt.Errorf("client: chunk cache: %w, and no private cache beside it: %w", locked, err)
	}
	s, err := pebblestore.Open(tmp, o.Pebble)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("client: private chunk cache %s: %w", tmp, err)
	}
	if o.Note != nil {
		o.Note(fmt.Sprintf("%v; using a private chunk cache for this run (%s, removed at the end)", locked, tmp))
	}
	return &Cache{cacheStore: s, Private: true}, nil
}

// Close closes the cache and removes it when it is private. It is safe to
// call twice.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.cacheStore.Close()
		if c.Private {
			if err := os.RemoveAll(c.Dir()); err != nil && c.closeErr == nil {
				c.closeErr = fmt.Errorf("client: removing private chunk cache: %w", err)
			}
		}
	})
	return c.closeErr
}
