package server_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server"
)

// start runs a server on free loopback ports until the test ends or
// stop is called, which returns Serve's result.
func start(t *testing.T, o server.Options) (*server.Server, func() error) {
	t.Helper()
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	stopped := false
	var result error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { stop() })
	return srv, stop
}

func TestServe(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	srv, stop := start(t, server.Options{DataDir: data, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})

	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := castore.Hash([]byte("chunk"))
	var enc castore.ChunkEncoder
	stream, err := nixcaspb.NewSyncServiceClient(conn).PutChunks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&nixcaspb.PutChunksRequest{Chunks: []*nixcaspb.Chunk{{Digest: d[:], Data: enc.Encode(nil, []byte("chunk"))}}})
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}

	base := "http://" + srv.HTTPAddr().String()
	body := get(t, base+"/metrics")
	for _, m := range []string{"nixcas_grpc_request_duration_seconds", "nixcas_grpc_received_bytes_total", "nixcas_chunks_stored_total 1", "go_goroutines",
		// The counting wrapper the services use: the chunk put in its
		// stored form counts as one chunk added.
		`nixcas_castore_chunks_put_total{result="added",store="local"} 1`,
		`nixcas_castore_operations_total{op="put_chunk",result="ok",store="local"} 1`,
		"nixcas_store_disk_bytes",
	} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if info := get(t, base+"/nix-cache-info"); !strings.Contains(info, "StoreDir: /nix/store") {
		t.Errorf("/nix-cache-info: %q", info)
	}

	if err := stop(); err != nil {
		t.Fatalf("Serve after shutdown: %v", err)
	}
	// The store is closed: it opens again, with the chunk in it.
	s, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatalf("reopening the store: %v", err)
	}
	defer s.Close()
	if ok, err := s.HasChunk(context.Background(), d); err != nil || !ok {
		t.Errorf("chunk put before the shutdown: %v, %v", ok, err)
	}
}

// TestShutdownTimeout: a call that does not end is cancelled once the
// shutdown timeout has passed, and what it sent is not visible.
func TestShutdownTimeout(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	srv, stop := start(t, server.Options{DataDir: data, GRPCAddr: "127.0.0.1:0", ShutdownTimeout: 300 * time.Millisecond})
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A directory stream left open: the root never arrives.
	open, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true}, "/snix.castore.v1.DirectoryService/Put")
	if err != nil {
		t.Fatal(err)
	}
	if err := open.SendMsg(castore.DirectoryToProto(&castore.Directory{})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the server receive it
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if took := time.Since(began); took < 250*time.Millisecond || took > 10*time.Second {
		t.Errorf("shutdown took %v with a call open, want about the 300 ms timeout", took)
	}
	s, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := s.Stats(context.Background()); err != nil || st.Directories != 0 {
		t.Errorf("after a cancelled directory stream: %+v, %v; want no directory", st, err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}
