package testminio

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// occupants take a port: addr's, or any free one when addr is "". They
// return the address taken and a function that frees it.
var occupants = []struct {
	name string
	take func(t *testing.T, addr string) (taken string, free func())
}{
	{"socket", func(t *testing.T, addr string) (string, func()) {
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String(), func() { ln.Close() }
	}},
	{"another server", func(t *testing.T, addr string) (string, func()) {
		if addr != "" {
			pickFirst(t, addr)
		}
		m := Start(t)
		return m.Addr, m.Stop
	}},
}

// pickFirst makes addr the address of the next first start, as if the
// port were taken between freeAddr and MinIO's bind.
func pickFirst(t *testing.T, addr string) {
	next := pickAddr
	first := true
	pickAddr = func(tb testing.TB) string {
		if first {
			first = false
			return addr
		}
		return freeAddr(tb)
	}
	t.Cleanup(func() { pickAddr = next })
}

// TestStartPortTaken: a first start whose port is taken before MinIO binds
// it goes on to another port, with a server of its own.
func TestStartPortTaken(t *testing.T) {
	for _, o := range occupants {
		t.Run(o.name, func(t *testing.T) {
			taken, _ := o.take(t, "")
			pickFirst(t, taken)
			s := Start(t)
			if s.Addr == taken {
				t.Fatalf("the server is on the taken address %s", taken)
			}
			mustPut(t, s, "mine")
			if got := objectNames(t, s); !slices.Equal(got, []string{"mine"}) {
				t.Fatalf("the new server's bucket holds %q, want only mine", got)
			}
		})
	}
}

// TestRestartPortTaken: a restart whose port was taken while the server
// was stopped fails the test, saying so; once the port is free again the
// server restarts on it with its data.
func TestRestartPortTaken(t *testing.T) {
	for _, o := range occupants {
		t.Run(o.name, func(t *testing.T) {
			s := Start(t)
			addr := s.Addr
			mustPut(t, s, "before")
			s.Stop()
			_, free := o.take(t, addr)

			rec := &fatalRecorder{TB: t}
			s.t = rec
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				s.Start()
				rec.returned = true
			}()
			<-ended
			s.t = t
			t.Logf("restart on a taken port: %s", rec.msg)
			if rec.returned || !strings.Contains(rec.msg, "port was taken") {
				t.Fatalf("restart on a taken port: returned %v, fatal %q; want a fatal error saying the port was taken", rec.returned, rec.msg)
			}

			free()
			s.Start()
			if s.Addr != addr {
				t.Fatalf("restarted on %s, want %s", s.Addr, addr)
			}
			if got := objectNames(t, s); !slices.Equal(got, []string{"before"}) {
				t.Fatalf("after the restart the bucket holds %q, want before", got)
			}
		})
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does, without failing the test.
type fatalRecorder struct {
	testing.TB
	msg      string
	returned bool
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func mustPut(t *testing.T, s *Server, name string) {
	t.Helper()
	data := []byte(name)
	if _, err := s.Client().PutObject(context.Background(), Bucket, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("putting %s: %v", name, err)
	}
	obj, err := s.Client().GetObject(context.Background(), Bucket, name, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if got, err := io.ReadAll(obj); err != nil || string(got) != name {
		t.Fatalf("reading %s back: %q, %v", name, got, err)
	}
}

func objectNames(t *testing.T, s *Server) []string {
	t.Helper()
	var names []string
	for obj := range s.Client().ListObjects(context.Background(), Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		names = append(names, obj.Key)
	}
	return names
}
