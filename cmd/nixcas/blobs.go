package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore/objectcache"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/s3objects"
)

// blobFlags say where a store keeps its frames: in its data directory
// (the default) or in S3 (--blobs), with a local cache of the frames read.
type blobFlags struct {
	url       string
	cacheDir  string
	cacheSize sizeValue
}

// defaultBlobCacheSize bounds the local cache of frames read from S3.
const defaultBlobCacheSize = 10 << 30

// blobsMarker is the file in a data directory whose store keeps its
// frames in object storage: it holds the URL, so that the store is never
// opened without them (or with another bucket) by mistake.
const blobsMarker = "blobs-url"

func (f *blobFlags) register(cmd *cobra.Command) {
	f.cacheSize = defaultBlobCacheSize
	fl := cmd.Flags()
	fl.StringVar(&f.url, "blobs", "", "keep the frames of chunks in S3-compatible object storage: `URL` s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&tls=true|false&addressing=path|virtual&part-size=16M&retries=3 (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS shared credentials file); the index stays in --data")
	fl.StringVar(&f.cacheDir, "blob-cache-dir", "", `directory of the local cache of frames read from --blobs (default DATA/blob-cache)`)
	fl.Var(&f.cacheSize, "blob-cache-size", "bytes of frames the local cache of --blobs keeps at most, least recently used out first (0: no cache): `SIZE` such as 10G")
}

// objects returns the object store for a store in dataDir: nil (the
// data directory's own) without --blobs; else S3, behind the local cache
// unless readOnly or the cache size is 0. It refuses a store whose frames
// are elsewhere than the flags say.
func (f *blobFlags) objects(ctx context.Context, dataDir string, readOnly bool) (pebblestore.ObjectStore, error) {
	marker := filepath.Join(dataDir, blobsMarker)
	recorded, err := os.ReadFile(marker)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if f.url == "" {
		if len(recorded) > 0 {
			return nil, fmt.Errorf("store %s keeps its frames in %s: pass --blobs", dataDir, strings.TrimSpace(string(recorded)))
		}
		return nil, nil
	}
	cfg, err := s3objects.ParseURL(f.url)
	if err != nil {
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	if len(recorded) > 0 {
		was, err := s3objects.ParseURL(strings.TrimSpace(string(recorded)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", marker, err)
		}
		if was.Bucket != cfg.Bucket || was.Prefix != cfg.Prefix || was.Endpoint != cfg.Endpoint {
			return nil, fmt.Errorf("store %s keeps its frames in %s, not in --blobs %s", dataDir, strings.TrimSpace(string(recorded)), f.url)
		}
	} else if !readOnly {
		// A store that kept frames here cannot move them.
		if ents, err := os.ReadDir(filepath.Join(dataDir, "frames")); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("store %s keeps its frames in %s: --blobs cannot move them", dataDir, filepath.Join(dataDir, "frames"))
		}
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(marker, []byte(f.url+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s3, err := s3objects.Open(ctx, cfg, s3objects.Options{})
	if err != nil {
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	if readOnly || f.cacheSize == 0 {
		return s3, nil
	}
	dir := f.cacheDir
	if dir == "" {
		dir = filepath.Join(dataDir, "blob-cache")
	}
	c, err := objectcache.Open(dir, int64(f.cacheSize), s3)
	if err != nil {
		return nil, fmt.Errorf("--blob-cache-dir: %w", err)
	}
	return c, nil
}
