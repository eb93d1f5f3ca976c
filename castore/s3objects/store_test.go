package s3objects_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/objectcache"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/pebblestore/objectstoretest"
	"github.com/nixcas/nixcas/castore/s3objects"
	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// prefixes gives each store of a test a prefix of its own in the bucket.
var prefixes atomic.Int64

func openS3(t *testing.T, m *testminio.Server, extra string) *s3objects.Store {
	t.Helper()
	c, err := s3objects.ParseURL(m.URL(fmt.Sprintf("t%d", prefixes.Add(1)), extra))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := s3objects.Open(ctx, c, s3objects.Options{Credentials: m.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestS3 runs everything that needs a MinIO server on one.
func TestS3(t *testing.T) {
	m := testminio.Start(t)
	t.Run("Conformance", func(t *testing.T) {
		objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore {
			return openS3(t, m, "part-size=5M")
		})
	})
	t.Run("CacheConformance", func(t *testing.T) {
		objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore {
			c, err := objectcache.Open(t.TempDir(), 32<<20, openS3(t, m, "part-size=5M"))
			if err != nil {
				t.Fatal(err)
			}
			return c
		})
	})
	t.Run("Multipart", func(t *testing.T) { testMultipart(t, m) })
	t.Run("ForeignKeys", func(t *testing.T) { testForeignKeys(t, m) })
	// The store's suite, on S3 behind a cache too small for all of its
	// frames (S3 alone runs the object store suite above). Its large
	// blob is 32 MiB rather than 64: eight times the 4 MiB cache, twice
	// the memtable.
	t.Run("CastoreCached", func(t *testing.T) {
		castoretest.RunWith(t, func(t *testing.T) castore.Store { return openPebbleS3(t, m) },
			castoretest.Options{LargeBlobSize: 32 << 20})
	})
	t.Run("Credentials", func(t *testing.T) { testCredentials(t, m) })
	t.Run("BucketMissing", func(t *testing.T) {
		c, _ := s3objects.ParseURL(strings.Replace(m.URL("x", ""), "s3://"+testminio.Bucket, "s3://no-such-bucket", 1))
		_, err := s3objects.Open(context.Background(), c, s3objects.Options{Credentials: m.Credentials()})
		if err == nil || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
			t.Fatalf("Open of a missing bucket: %v", err)
		}
	})
	t.Run("Unavailable", func(t *testing.T) { testUnavailable(t, m) })
	t.Run("PackAndServeWhileDown", func(t *testing.T) { testPackAndServeWhileDown(t, m) })
}

// openPebbleS3 opens a Pebble store whose frames are in S3 behind a 4 MiB
// cache, with no decoded-frame cache, so that every chunk read from a
// frame reaches the object stores.
func openPebbleS3(t *testing.T, m *testminio.Server) *pebblestore.Store {
	objects, err := objectcache.Open(t.TempDir(), 4<<20, openS3(t, m, ""))
	if err != nil {
		t.Fatal(err)
	}
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{
		CacheSize:    8 << 20,
		MemTableSize: 16 << 20,
		Objects:      objects,
		// No frame kept decoded in memory or on local disk: reads go to
		// the objects.
		Frames: pebblestore.FrameOptions{CacheSize: 1, DecodedCacheSize: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testMultipart checks that an object above the part size went up in
// parts: S3 gives a multipart object an ETag "<md5 of md5s>-<parts>".
func testMultipart(t *testing.T, m *testminio.Server) {
	s := openS3(t, m, "part-size=5M")
	name, data := objectstoretest.Object(1, objectstoretest.LargeSize)
	objectstoretest.MustPut(t, s, name, data)
	c := s.Config()
	info, err := m.Client().StatObject(context.Background(), c.Bucket, c.Prefix+name[:2]+"/"+name, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(info.ETag, "-3") {
		t.Fatalf("object of %d bytes with 5 MiB parts has ETag %q, want one of 3 parts", len(data), info.ETag)
	}
	small, sdata := objectstoretest.Object(2, 1000)
	objectstoretest.MustPut(t, s, small, sdata)
	info, err = m.Client().StatObject(context.Background(), c.Bucket, c.Prefix+small[:2]+"/"+small, minio.StatObjectOptions{})
	if err != nil || strings.Contains(info.ETag, "-") {
		t.Fatalf("small object: ETag %q, err %v; want a single PUT", info.ETag, err)
	}
}

// testForeignKeys: keys under the prefix that are not objects of this
// layout are not listed, and keys beside the prefix are not either.
func testForeignKeys(t *testing.T, m *testminio.Server) {
	s := openS3(t, m, "")
	c := s.Config()
	name, data := objectstoretest.Object(3, 10)
	objectstoretest.MustPut(t, s, name, data)
	for _, key := range []string{
		c.Prefix + "README",
		c.Prefix + "ab/cdef",        // wrong subdirectory
		c.Prefix + name[:2] + "/XY", // not hex
		strings.TrimSuffix(c.Prefix, "/") + "x/" + name[:2] + "/" + name, // a longer prefix
	} {
		if _, err := m.Client().PutObject(context.Background(), c.Bucket, key, bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err := s.ListObjects(context.Background(), func(name string, _ int64) error {
		got = append(got, name)
		return nil
	})
	if err != nil || len(got) != 1 || got[0] != name {
		t.Fatalf("ListObjects = %v, %v; want only %s", got, err, name)
	}
}

// testCredentials: from the environment, from the shared credentials
// file with a profile, and none at all.
func testCredentials(t *testing.T, m *testminio.Server) {
	c, err := s3objects.ParseURL(m.URL("creds", ""))
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	open := func() error {
		s, err := s3objects.Open(context.Background(), c, s3objects.Options{})
		if err != nil {
			return err
		}
		name, data := objectstoretest.Object(4, 10)
		return s.PutObject(context.Background(), name, data)
	}
	if err := open(); !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), "no credentials") {
		t.Fatalf("Open without credentials: %v", err)
	}

	file := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(file, []byte(fmt.Sprintf("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrongwrong\n\n[ci]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		testminio.AccessKey, testminio.SecretKey)), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	t.Setenv("AWS_PROFILE", "ci")
	if err := open(); err != nil {
		t.Fatalf("credentials from the shared file, profile ci: %v", err)
	}
	t.Setenv("AWS_PROFILE", "default")
	if err := open(); err == nil {
		t.Fatal("wrong credentials of the default profile worked")
	}

	t.Setenv("AWS_ACCESS_KEY_ID", testminio.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testminio.SecretKey)
	if err := open(); err != nil {
		t.Fatalf("credentials from the environment (before the file's): %v", err)
	}
}

// testUnavailable stops MinIO: reads and writes fail as ErrUnavailable,
// promptly, and work again once it is back, with the same Store.
func testUnavailable(t *testing.T, m *testminio.Server) {
	s := openS3(t, m, "")
	ctx := context.Background()
	name, data := objectstoretest.Object(5, 100_000)
	objectstoretest.MustPut(t, s, name, data)
	m.Stop()
	other, odata := objectstoretest.Object(6, 1000)
	start := time.Now()
	for _, op := range []struct {
		what string
		do   func() error
	}{
		{"get", func() error { _, err := s.GetObject(ctx, name, 0, -1, nil); return err }},
		{"range", func() error { _, err := s.GetObject(ctx, name, 10, 10, nil); return err }},
		{"put", func() error { return s.PutObject(ctx, other, odata) }},
		{"delete", func() error { return s.DeleteObject(ctx, other) }},
		{"list", func() error { return s.ListObjects(ctx, func(string, int64) error { return nil }) }},
	} {
		if err := op.do(); !errors.Is(err, castore.ErrUnavailable) {
			t.Errorf("%s with MinIO stopped: %v, want ErrUnavailable", op.what, err)
		}
	}
	t.Logf("five calls failed in %v with MinIO stopped", time.Since(start))
	m.Start()
	if got := objectstoretest.MustGet(t, s, name); !bytes.Equal(got, data) {
		t.Fatal("read after MinIO came back differs")
	}
	objectstoretest.MustPut(t, s, other, odata)
}

// testPackAndServeWhileDown: with MinIO stopped, chunks are still stored
// (inline, queued) and packing fails without losing them; a gRPC read of
// a blob whose frames no cache holds is UNAVAILABLE. Once MinIO is back,
// the same store packs and serves them.
func testPackAndServeWhileDown(t *testing.T, m *testminio.Server) {
	ctx := context.Background()
	s := openPebbleS3(t, m)
	_, packed := objectstoretest.Object(20, 1<<20)
	pd, _ := castoretest.MustPutBlob(t, s, packed, 32<<10)
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	gs, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	blobs := castorepb.NewBlobServiceClient(conn)
	read := func(d castore.Digest) ([]byte, error) {
		stream, err := blobs.Read(ctx, &castorepb.ReadBlobRequest{Digest: d[:]})
		if err != nil {
			return nil, err
		}
		var out []byte
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return out, err
			}
			out = append(out, msg.GetData()...)
		}
	}

	m.Stop()
	if _, err := read(pd); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC read of a packed blob with MinIO stopped: %v, want UNAVAILABLE", err)
	}
	_, queued := objectstoretest.Object(21, 1<<20)
	qd, _ := castoretest.MustPutBlob(t, s, queued, 32<<10) // chunks stored inline, queued
	if err := s.PackPending(ctx); !errors.Is(err, castore.ErrUnavailable) {
		t.Errorf("packing with MinIO stopped: %v, want ErrUnavailable", err)
	}
	if got, err := read(qd); err != nil || !bytes.Equal(got, queued) {
		t.Fatalf("blob stored with MinIO stopped, read with it stopped: %v", err)
	}
	m.Start()
	if err := s.PackPending(ctx); err != nil {
		t.Fatalf("packing once MinIO is back: %v", err)
	}
	for _, b := range []struct {
		d    castore.Digest
		data []byte
	}{{pd, packed}, {qd, queued}} {
		if got, err := read(b.d); err != nil || !bytes.Equal(got, b.data) {
			t.Fatalf("gRPC read once MinIO is back: %v", err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Frames < 2 {
		t.Fatalf("%d frames after packing 2 MiB into 1 MiB frames", st.Frames)
	}
}
