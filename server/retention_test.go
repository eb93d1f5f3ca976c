package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/store"
)

var retentionPaths = []string{
	"0c6kzph7l0dcbfmjap64f0czdafn3b7x-a",
	"0dxzkflshz3w8ac8bc2p0v3xfbi1szmd-b",
	"1c6kzph7l0dcbfmjap64f0czdafn3b7x-c",
}

// fillStore stores the retention paths in a new store in dir, pins those
// pinned says, and forgets the access times of those forget says (as a
// store from before access times were kept).
func fillStore(t *testing.T, dir string, pinned, forget []int) []*store.PathInfo {
	t.Helper()
	ctx := context.Background()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	var ps []*store.PathInfo
	for _, name := range retentionPaths {
		var nar []byte
		for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents", strings.Repeat(name, 50), ")"} {
			nar = binary.LittleEndian.AppendUint64(nar, uint64(len(tok)))
			nar = append(nar, tok...)
			nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
		}
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		root := res.Root
		root.Name = name
		p := &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, i := range pinned {
		if _, err := x.Pin(ctx, ps[i].Digest()); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range forget {
		d := ps[i].Digest()
		if err := s.SetMeta(ctx, castore.MetaRecord{Kind: 'A', Key: d[:], Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	return ps
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRetentionSchedule: a server with a size limit expires on its
// schedule, keeping the pinned path, and counts what it deleted.
func TestRetentionSchedule(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ps := fillStore(t, dir, []int{2}, nil)
	srv, stop := start(t, server.Options{
		DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Retention: server.RetentionPolicy{MaxSize: 1, Interval: 100 * time.Millisecond},
	})
	base := "http://" + srv.HTTPAddr().String()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(get(t, base+"/metrics"), "nixcas_retention_deleted_paths_total 2\n") {
		if time.Now().After(deadline) {
			t.Fatalf("no retention run deleted 2 paths within a minute:\n%s", get(t, base+"/metrics"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, want := range []int{http.StatusNotFound, http.StatusNotFound, http.StatusOK} {
		if got := httpStatus(t, base+"/"+ps[i].Path[:32]+".narinfo"); got != want {
			t.Errorf("narinfo of %s after retention: %d; want %d", ps[i].Path, got, want)
		}
	}
	m := get(t, base+"/metrics")
	for _, s := range []string{"nixcas_retention_deleted_nar_bytes_total ", "nixcas_retention_runs_total ", "nixcas_retention_last_run_timestamp_seconds "} {
		if !strings.Contains(m, s) || strings.Contains(m, s+"0\n") {
			t.Errorf("metrics lack a non-zero %s", s)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestAccessFlushedOnShutdown: reads over HTTP (narinfo) and gRPC
// (PathInfoService.Get) are written as access times by the time the
// server has stopped; a path not read gets none.
func TestAccessFlushedOnShutdown(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ps := fillStore(t, dir, nil, []int{0, 1, 2})
	srv, stop := start(t, server.Options{DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	get(t, "http://"+srv.HTTPAddr().String()+"/"+ps[0].Path[:32]+".narinfo")
	d := ps[1].Digest()
	if _, err := storepb.NewPathInfoServiceClient(dial(t, srv.GRPCAddr().String(), nil)).Get(context.Background(),
		&storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}}); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s, err := pebblestore.OpenReadOnly(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	for i, want := range []bool{true, true, false} {
		at, ok, err := x.LastAccess(context.Background(), ps[i].Digest())
		if err != nil || ok != want || (ok && time.Since(at) > time.Hour) {
			t.Errorf("access time of %s after the server stopped: %v, %v, %v; want recorded %v", ps[i].Path, at, ok, err, want)
		}
	}
}
