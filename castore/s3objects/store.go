package s3objects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// MaxObjectSize bounds what a whole-object read allocates: far above any
// frame a store writes (pebblestore.MaxFrameSize decoded).
const MaxObjectSize = 256 << 20

// Store is a pebblestore.ObjectStore in an S3 bucket. Safe for concurrent
// use; it holds no resources beyond idle connections, so it needs no
// Close.
type Store struct {
	cfg    Config
	client *minio.Client
	core   minio.Core
	m      *metrics
}

var (
	_ pebblestore.ObjectStore = (*Store)(nil)
	_ pebblestore.ObjectTimer = (*Store)(nil)
)

// Options are what a Store needs beyond its Config.
type Options struct {
	// Credentials sign the requests; nil takes them from the environment
	// or the AWS shared credentials file (see the package documentation).
	Credentials *credentials.Credentials
}

// Open connects to the bucket of c and checks that it exists. A service
// that cannot be reached is castore.ErrUnavailable.
func Open(ctx context.Context, c Config, o Options) (*Store, error) {
	c = c.withDefaults()
	creds := o.Credentials
	if creds == nil {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
		})
		v, err := creds.GetWithContext(nil)
		if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
			return nil, fmt.Errorf("%w: object store %s: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE / AWS_PROFILE", castore.ErrInvalid, c.where())
		}
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // ranges of the stored bytes, not of a re-encoding
	}
	lookup := minio.BucketLookupPath
	if c.Addressing == AddressVirtual {
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       c.TLS,
		Transport:    transport,
		Region:       c.Region,
		BucketLookup: lookup,
		MaxRetries:   c.Retries,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: object store %s: %v", castore.ErrInvalid, c.where(), err)
	}
	s := &Store{cfg: c, client: client, core: minio.Core{Client: client}, m: newMetrics()}
	ok, err := client.BucketExists(ctx, c.Bucket)
	if err != nil {
		return nil, s.fail("open", "", err)
	}
	if !ok {
		return nil, fmt.Errorf("castore: object store %s: bucket %q does not exist", c.where(), c.Bucket)
	}
	return s, nil
}

// Config returns the store's configuration, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// where names the bucket and prefix for errors.
func (c Config) where() string {
	scheme := "https"
	if !c.TLS {
		scheme = "http"
	}
	return fmt.Sprintf("s3://%s/%s (%s://%s)", c.Bucket, c.Prefix, scheme, c.Endpoint)
}

func (s *Store) key(name string) string { return s.cfg.Prefix + name[:2] + "/" + name }

// nameOf is the inverse of key: ok is false for keys of another layout.
func (s *Store) nameOf(key string) (string, bool) {
	rest, ok := bytes.CutPrefix([]byte(key), []byte(s.cfg.Prefix))
	if !ok || len(rest) < 6 || rest[2] != '/' {
		return "", false
	}
	name := string(rest[3:])
	if pebblestore.CheckObjectName(name) != nil || name[:2] != string(rest[:2]) {
		return "", false
	}
	return name, true
}

// fail translates a minio-go error into the castore errors and counts it.
func (s *Store) fail(op, name string, err error) error {
	what := fmt.Sprintf("castore: object store %s: %s %s", s.cfg.where(), op, name)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		s.m.errors.WithLabelValues(op, "canceled").Inc()
		return fmt.Errorf("%s: %w", what, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket":
		s.m.errors.WithLabelValues(op, "not_found").Inc()
		return fmt.Errorf("%w: %s: %v", castore.ErrNotFound, what, err)
	case resp.Code == "InvalidRange":
		s.m.errors.WithLabelValues(op, "invalid").Inc()
		return fmt.Errorf("%w: %s: %v", castore.ErrInvalid, what, err)
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusRequestTimeout, resp.Code == "SlowDown",
		resp.Code == "" && resp.StatusCode == 0:
		// A status of 0 and no code: the request got no S3 answer at all
		// (refused, reset, timed out, cut short).
		s.m.errors.WithLabelValues(op, "unavailable").Inc()
		return fmt.Errorf("%w: %s: %v", castore.ErrUnavailable, what, err)
	}
	s.m.errors.WithLabelValues(op, "other").Inc()
	return fmt.Errorf("%s: %v", what, err)
}

// PutObject implements pebblestore.ObjectStore: one PUT, or a multipart
// upload for objects larger than the part size.
func (s *Store) PutObject(ctx context.Context, name string, data []byte) error {
	if err := pebblestore.CheckObjectName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.m.requests.WithLabelValues("put").Inc()
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(name), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{PartSize: s.cfg.PartSize, ContentType: "application/octet-stream"})
	if err != nil {
		return s.fail("put", name, err)
	}
	s.m.bytes.WithLabelValues("put").Add(float64(len(data)))
	return nil
}

// SyncObjects implements pebblestore.ObjectStore: nothing to do, a put
// is durable when it returns.
func (s *Store) SyncObjects(ctx context.Context) error { return ctx.Err() }

// GetObject implements pebblestore.ObjectStore with one ranged GET. It
// returns every byte asked for or an error: a response cut short is
// castore.ErrUnavailable, an object shorter than the range
// castore.ErrCorrupt.
func (s *Store) GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	if err := pebblestore.CheckObjectName(name); err != nil {
		return dst, err
	}
	if off < 0 {
		return dst, fmt.Errorf("%w: object %s: offset %d", castore.ErrInvalid, name, off)
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	if n == 0 {
		// No range names zero bytes.
		return dst, s.statOffset(ctx, name, off)
	}
	var opts minio.GetObjectOptions
	switch {
	case n > 0:
		err := opts.SetRange(off, off+n-1)
		if err != nil {
			return dst, fmt.Errorf("%w: object %s: range %d+%d: %v", castore.ErrInvalid, name, off, n, err)
		}
	case off > 0:
		_ = opts.SetRange(off, 0)
	}
	s.m.requests.WithLabelValues("get").Inc()
	body, info, _, err := s.core.GetObject(ctx, s.cfg.Bucket, s.key(name), opts)
	if err != nil {
		if n < 0 && minio.ToErrorResponse(err).Code == "InvalidRange" {
			// The rest from the very end is no bytes, but no range says so.
			return dst, s.statOffset(ctx, name, off)
		}
		return dst, s.fail("get", name, err)
	}
	defer body.Close()
	size := info.Size
	switch {
	case n > 0 && size < n:
		return dst, fmt.Errorf("%w: object %s: %d bytes at %d, want %d", castore.ErrCorrupt, name, size, off, n)
	case n > 0 && size > n, size < 0:
		return dst, fmt.Errorf("castore: object store %s: get %s: %d bytes for a range of %d", s.cfg.where(), name, size, n)
	case size > MaxObjectSize:
		return dst, fmt.Errorf("%w: object %s: %d bytes, more than %d", castore.ErrCorrupt, name, size, MaxObjectSize)
	}
	start := len(dst)
	dst = castore.Grow(dst, int(size))
	got, err := io.ReadFull(body, dst[start:])
	s.m.bytes.WithLabelValues("get").Add(float64(got))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("response cut short at %d of %d bytes: %w", got, size, err)
		}
		return dst[:start], s.fail("get", name, err)
	}
	return dst, nil
}

// statOffset checks that the object exists and off is within it or at its
// end.
func (s *Store) statOffset(ctx context.Context, name string, off int64) error {
	s.m.requests.WithLabelValues("stat").Inc()
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return s.fail("stat", name, err)
	}
	if off > info.Size {
		return fmt.Errorf("%w: object %s: offset %d beyond its %d bytes", castore.ErrInvalid, name, off, info.Size)
	}
	return nil
}

// DeleteObject implements pebblestore.ObjectStore.
func (s *Store) DeleteObject(ctx context.Context, name string) error {
	if err := pebblestore.CheckObjectName(name); err != nil {
		return err
	}
	s.m.requests.WithLabelValues("delete").Inc()
	err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil {
		if err := s.fail("delete", name, err); !errors.Is(err, castore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// ListObjects implements pebblestore.ObjectStore: the objects under the
// prefix, in key order, one LIST request per thousand.
func (s *Store) ListObjects(ctx context.Context, fn func(name string, size int64) error) error {
	return s.ListObjectTimes(ctx, func(name string, size int64, _ time.Time) error { return fn(name, size) })
}

// ListObjectTimes implements pebblestore.ObjectTimer: the objects under
// the prefix, in key order, one LIST request per thousand, with each
// object's Last-Modified (for an object S3 holds, the start of the
// put that wrote it last, by the service's clock).
func (s *Store) ListObjectTimes(ctx context.Context, fn func(name string, size int64, written time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	s.m.requests.WithLabelValues("list").Inc()
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			return s.fail("list", "", obj.Err)
		}
		name, ok := s.nameOf(obj.Key)
		if !ok {
			continue
		}
		if err := fn(name, obj.Size, obj.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// ObjectTime implements pebblestore.ObjectTimer with one HEAD request.
func (s *Store) ObjectTime(ctx context.Context, name string) (time.Time, error) {
	if err := pebblestore.CheckObjectName(name); err != nil {
		return time.Time{}, err
	}
	s.m.requests.WithLabelValues("stat").Inc()
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return time.Time{}, s.fail("stat", name, err)
	}
	return info.LastModified, nil
}

// ProbeObjects implements pebblestore.ObjectProber: one request asking
// whether the bucket exists, which needs the endpoint to answer and the
// credentials to be accepted.
func (s *Store) ProbeObjects(ctx context.Context) error {
	s.m.requests.WithLabelValues("probe").Inc()
	ok, err := s.client.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return s.fail("probe", "", err)
	}
	if !ok {
		return fmt.Errorf("%w: castore: object store %s: bucket %q does not exist", castore.ErrUnavailable, s.cfg.where(), s.cfg.Bucket)
	}
	return nil
}
