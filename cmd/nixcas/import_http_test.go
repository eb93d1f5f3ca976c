package main

// End-to-end test of `nixcas import`: binary caches written by real Nix are
// imported by the binary, resumed, and served back to Nix.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// importE2EPath is a store path of the test cache.
type importE2EPath struct {
	base    string
	nar     []byte
	narHash string // nixbase32
	refs    []string
}

func (p importE2EPath) abs() string { return store.StoreDir + "/" + p.base }

// importE2ENix runs a Nix command with a private cache directory.
func importE2ENix(t *testing.T, args ...string) string {
	t.Helper()
	if args[0] == "nix" {
		args = append([]string{"nix", "--extra-experimental-features", "nix-command"}, args[1:]...)
	}
	cmd := exec.CommandContext(t.Context(), args[0], args[1:]...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"), "NIX_REMOTE=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// importE2ECache writes an uncompressed binary cache of three paths, the
// last referring to the other two, and has Nix copy it into a new cache
// with the given compression; it returns that cache's directory.
func importE2ECache(t *testing.T, compression string) (string, []importE2EPath) {
	trees := []*testtree.Node{
		testtree.File(testtree.Text("a leaf\n")),
		testtree.Dir(testtree.Entries{
			"bin": testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Random(7, 200_000))}),
			"lib": testtree.Link("bin"),
		}),
		nil, // the referrer, below
	}
	var ps []importE2EPath
	for i, name := range []string{"leaf", "tool", "app"} {
		sum := sha256.Sum256([]byte("import test " + name))
		p := importE2EPath{base: nixbase32.EncodeToString(sum[:20]) + "-" + name}
		if trees[i] == nil {
			p.refs = []string{ps[0].base, ps[1].base}
			trees[i] = testtree.File(testtree.Text(ps[0].abs() + "\n" + ps[1].abs() + "\n"))
		}
		var nar bytes.Buffer
		if err := testtree.WriteNAR(&nar, trees[i]); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(nar.Bytes())
		p.nar, p.narHash = nar.Bytes(), nixbase32.EncodeToString(h[:])
		ps = append(ps, p)
	}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.MkdirAll(filepath.Join(plain, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		ni := fmt.Sprintf("StorePath: %s\nURL: nar/%s.nar\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
			p.abs(), p.narHash, p.narHash, len(p.nar), strings.Join(p.refs, " "))
		if err := os.WriteFile(filepath.Join(plain, p.base[:32]+".narinfo"), []byte(ni), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plain, "nar", p.narHash+".nar"), p.nar, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), compression)
	importE2ENix(t, "nix", "copy", "--no-check-sigs", "--from", "file://"+plain, "--to", "file://"+dir+"?compression="+compression, ps[2].abs())
	return dir, ps
}

func TestImportCommand(t *testing.T) {
	t.Parallel()
	dir, ps := importE2ECache(t, "xz")
	data := filepath.Join(t.TempDir(), "data")

	res := e2eInvocation{Args: []string{"import", "--data", data, dir}}.mustSucceed(t)
	for _, want := range []string{"importing 3 paths", "imported " + ps[0].abs(), "imported " + ps[2].abs(), "imported 3 paths", "0 failed"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("import: stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	// Paths are imported references first.
	if strings.Index(res.Stderr, "imported "+ps[2].abs()) < strings.Index(res.Stderr, "imported "+ps[1].abs()) {
		t.Errorf("the referrer was imported before its references:\n%s", res.Stderr)
	}
	res = e2eInvocation{Args: []string{"import", "--data", data, "file://" + dir}}.mustSucceed(t)
	if !strings.Contains(res.Stderr, "imported 0 paths") || !strings.Contains(res.Stderr, "skipped 3 already present") {
		t.Errorf("second import did not skip everything:\n%s", res.Stderr)
	}

	// From an HTTP cache, one path with its closure.
	ts := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer ts.Close()
	data2 := filepath.Join(t.TempDir(), "data")
	res = e2eInvocation{Args: []string{"import", "--data", data2, ts.URL, ps[1].abs()}}.mustSucceed(t)
	if !strings.Contains(res.Stderr, "imported 1 paths") {
		t.Errorf("import of one path over HTTP:\n%s", res.Stderr)
	}
	// A path the cache lacks fails the command.
	missing := strings.Repeat("1", 32) + "-missing"
	res = e2eInvocation{Args: []string{"import", "--data", data2, ts.URL, missing}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "failed /nix/store/"+missing[:32]) && !strings.Contains(res.Stderr, "failed "+missing[:32]) {
		t.Errorf("import of a missing path: %v\n%s", res.Err, res.Stderr)
	}

	// Serve the first store to Nix and compare what it gets.
	s, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := httpcache.New(httpcache.Options{CAS: s, Index: store.NewIndex(s, s)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "store")
	importE2ENix(t, "nix", "copy", "--no-check-sigs", "--from", srv.URL, "--to", dst, ps[2].abs())
	var infos []struct {
		Path    string `json:"path"`
		NarSize int    `json:"narSize"`
	}
	if err := json.Unmarshal([]byte(importE2ENix(t, "nix", "path-info", "--json", "--store", dst, "--all")), &infos); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, i := range infos {
		got[i.Path] = i.NarSize
	}
	for _, p := range ps {
		if got[p.abs()] != len(p.nar) {
			t.Errorf("%s: copied back with NAR size %d, want %d", p.base, got[p.abs()], len(p.nar))
		}
		dump := importE2ENix(t, "nix-store", "--dump", filepath.Join(dst, p.abs()))
		if dump != string(p.nar) {
			t.Errorf("%s: nix-store --dump of the copy differs from the NAR", p.base)
		}
	}
}
