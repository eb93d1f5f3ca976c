package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/internal/testtree"
)

// TestGRPCPushPullBase pushes and pulls a second version of a tree with
// the first as --base: the files of the first serve as dictionaries, so
// the second's changed file (every chunk changed a little) costs a small
// part of its size on the wire both ways.
func TestGRPCPushPullBase(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	const size = 1 << 20
	old := make([]byte, size)
	if _, err := io.ReadFull(testtree.Random(3, size).Open(), old); err != nil {
		t.Fatal(err)
	}
	changed := append([]byte(nil), old...)
	for i := 500; i < size; i += 32 << 10 {
		changed[i] ^= 0x11
	}
	v1, v2 := filepath.Join(dir, "v1"), filepath.Join(dir, "v2")
	testtree.Build(t, v1, testtree.Dir(testtree.Entries{"bin": testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Bytes(old))})}))
	testtree.Build(t, v2, testtree.Dir(testtree.Entries{"bin": testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Bytes(changed))})}))

	pushCache, pullCache := filepath.Join(dir, "push-cache"), filepath.Join(dir, "pull-cache")
	first := grpcPush(t, "--server", srv.grpcAddr, "--cache", pushCache, v1)[0]
	second := grpcPush(t, "--server", srv.grpcAddr, "--cache", pushCache, "--base", string(first.Root), v2)[0]
	if second.ChunksSent == 0 || second.BytesSent > size/8 {
		t.Errorf("push with --base: %+v; want chunks sent in under %d bytes", second, size/8)
	}
	t.Logf("second version pushed in %d bytes", second.BytesSent)
	grpcPull(t, "--server", srv.grpcAddr, "--cache", pullCache, "--root", string(first.Root), "--to", filepath.Join(dir, "out1"))
	pulled := grpcPull(t, "--server", srv.grpcAddr, "--cache", pullCache, "--base", string(first.Root), "--root", string(second.Root), "--to", filepath.Join(dir, "out2"))
	if pulled.ChunksFetched != second.ChunksSent || pulled.BytesReceived > size/8 {
		t.Errorf("pull with --base: %+v; want %d chunks in under %d bytes", pulled, second.ChunksSent, size/8)
	}
	t.Logf("second version pulled in %d bytes", pulled.BytesReceived)
	if got, want := grpcNixHash(t, filepath.Join(dir, "out2")), grpcNixHash(t, v2); got != want {
		t.Errorf("pulled tree hashes to %s, want %s", got, want)
	}

	res := e2eInvocation{Args: []string{"pull", "--server", srv.grpcAddr, "--cache", pullCache, "--base", "{not json", "--root", string(second.Root), "--to", filepath.Join(dir, "out3")}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "--base") {
		t.Errorf("pull with a malformed --base: %v, stderr %q", res.Err, res.Stderr)
	}
}
