package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestAutoBase pushes and pulls two versions of a package, pkg-1.0 and
// pkg-1.1, whose one large file differs in a few places: with the default
// --base auto the second transfer takes the first as its base (the client
// cache remembers the last path of each family) and moves far fewer bytes
// than with --base none; a path of another family gets no base.
func TestAutoBase(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	nixStore := filepath.Join(dir, "nix")

	// 4 MiB of incompressible bytes, then the same with 16 scattered
	// 64-byte edits: only the chunks around the edits differ, and they
	// compress well only against the first version.
	rng := rand.New(rand.NewPCG(1, 2))
	v1 := make([]byte, 4<<20)
	for i := range v1 {
		v1[i] = byte(rng.Uint32())
	}
	v2 := append([]byte(nil), v1...)
	for i := range 16 {
		at := (i*len(v2))/16 + 1000
		for j := range 64 {
			v2[at+j] ^= 0x5a
		}
	}
	add := func(name string, tool []byte) string {
		t.Helper()
		src := filepath.Join(dir, "src", name)
		if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "bin", "tool"), tool, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "README"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return grpcNix(t, nixStore, "nix-store", "--add", src)
	}
	p10, p11 := add("pkg-1.0", v1), add("pkg-1.1", v2)
	other := add("other-1.1", v2[:1<<20])

	push := func(srv *grpcServe, cache string, extra ...string) (first, second grpcPushOutput) {
		t.Helper()
		args := append([]string{"--server", srv.grpcAddr, "--cache", cache, "--nix-store", nixStore}, extra...)
		a := grpcPush(t, append(args, p10)...)
		b := grpcPush(t, append(args, p11)...)
		if len(a) != 1 || len(b) != 1 {
			t.Fatalf("pushes printed %+v and %+v, want a line each", a, b)
		}
		return a[0], b[0]
	}
	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	first, auto := push(srv, filepath.Join(dir, "cache"))
	if first.Base != "" {
		t.Errorf("first push of the family had base %q, want none", first.Base)
	}
	if auto.Base != p10 {
		t.Errorf("push of %s had base %q, want %s", p11, auto.Base, p10)
	}
	if o := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache"), "--nix-store", nixStore, other); len(o) != 1 || o[0].Base != "" {
		t.Errorf("push of %s, another family: %+v, want no base", other, o)
	}

	srv2 := startGRPCServe(t, filepath.Join(dir, "server2"))
	_, none := push(srv2, filepath.Join(dir, "cache2"), "--base", "none")
	if none.Base != "" {
		t.Errorf("push with --base none had base %q", none.Base)
	}
	if auto.ChunksSent != none.ChunksSent || auto.BytesSent*2 > none.BytesSent {
		t.Errorf("second push sent %d chunks in %d bytes with --base auto, %d chunks in %d bytes with --base none: want the same chunks in less than half the bytes",
			auto.ChunksSent, auto.BytesSent, none.ChunksSent, none.BytesSent)
	}

	// Pulls into one cache: the second version's base is the first.
	pull := func(cache, path, to string, extra ...string) grpcPullOutput {
		t.Helper()
		out := filepath.Join(dir, to)
		got := grpcPull(t, append([]string{"--server", srv.grpcAddr, "--cache", filepath.Join(dir, cache), path, "--to", out}, extra...)...)
		if want := grpcNixHash(t, filepath.Join(nixStore, path)); grpcNixHash(t, out) != want {
			t.Fatalf("pulled %s does not hash to %s", path, want)
		}
		return got
	}
	if got := pull("cache3", p10, "out10"); got.Base != "" {
		t.Errorf("first pull of the family had base %q", got.Base)
	}
	pulledAuto := pull("cache3", p11, "out11")
	if pulledAuto.Base != p10 {
		t.Errorf("pull of %s had base %q, want %s", p11, pulledAuto.Base, p10)
	}
	t.Logf("push: %d chunks, %d bytes with base, %d without", auto.ChunksSent, auto.BytesSent, none.BytesSent)
	pull("cache4", p10, "out10b")
	pulledNone := pull("cache4", p11, "out11b", "--base", "none")
	if pulledAuto.ChunksFetched != pulledNone.ChunksFetched || pulledAuto.BytesReceived*2 > pulledNone.BytesReceived {
		t.Errorf("second pull fetched %d chunks in %d bytes with --base auto, %d chunks in %d bytes with --base none: want the same chunks in less than half the bytes",
			pulledAuto.ChunksFetched, pulledAuto.BytesReceived, pulledNone.ChunksFetched, pulledNone.BytesReceived)
	}
	t.Logf("pull: %d chunks, %d bytes with base, %d without", pulledAuto.ChunksFetched, pulledAuto.BytesReceived, pulledNone.BytesReceived)
}
