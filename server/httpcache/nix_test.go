package httpcache_test

// Helpers for tests against real Nix (Debian's nix-bin, Nix 2.8): a
// throwaway Nix store with store paths that refer to each other, signing
// keys made by nix-store, and nixcas binary caches served on loopback.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// nix runs Nix commands with a private home and cache directory, so no
// state (such as Nix's narinfo cache) is shared between tests.
type nix struct {
	t   testing.TB
	env []string
}

func newNix(t testing.TB) *nix {
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "NIX_REMOTE=")
	return &nix{t: t, env: env}
}

// try runs a Nix command (for "nix", with the nix-command feature on) and
// returns its standard output and error.
func (n *nix) try(name string, args ...string) (string, string, error) {
	n.t.Helper()
	if name == "nix" {
		args = append([]string{"--extra-experimental-features", "nix-command"}, args...)
	}
	cmd := exec.CommandContext(n.t.Context(), name, args...)
	cmd.Env = n.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// run runs a Nix command that must succeed and returns its output.
func (n *nix) run(name string, args ...string) string {
	n.t.Helper()
	out, errOut, err := n.try(name, args...)
	if err != nil {
		n.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut)
	}
	return out
}

// keyPair makes a signing key with nix-store and returns it with the
// public key's text.
func (n *nix) keyPair(name string) (signature.SecretKey, string) {
	n.t.Helper()
	dir := n.t.TempDir()
	sk, pk := filepath.Join(dir, "secret"), filepath.Join(dir, "public")
	n.run("nix-store", "--generate-binary-cache-key", name, sk, pk)
	b, err := os.ReadFile(sk)
	if err != nil {
		n.t.Fatal(err)
	}
	key, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		n.t.Fatal(err)
	}
	pub, err := os.ReadFile(pk)
	if err != nil {
		n.t.Fatal(err)
	}
	return key, strings.TrimSpace(string(pub))
}

// pathInfo is what `nix path-info --json` prints of one path.
type pathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Signatures []string `json:"signatures"`
	Valid      *bool    `json:"valid"`
}

// pathInfos returns the path infos of paths (all paths when none) in the
// store at storeURL, by path.
func (n *nix) pathInfos(storeURL string, paths ...string) map[string]pathInfo {
	n.t.Helper()
	args := []string{"path-info", "--json", "--sigs", "--store", storeURL}
	if len(paths) == 0 {
		args = append(args, "--all")
	}
	var infos []pathInfo
	if err := json.Unmarshal([]byte(n.run("nix", append(args, paths...)...)), &infos); err != nil {
		n.t.Fatal(err)
	}
	m := map[string]pathInfo{}
	for _, i := range infos {
		m[i.Path] = i
	}
	return m
}

// testPath is a store path of the test closure.
type testPath struct {
	name string
	tree *testtree.Node
	refs []int // indexes of the paths it refers to (may include itself)

	base    string // "<hash>-<name>"
	nar     []byte
	narHash string // nixbase32
}

func (p *testPath) abs() string { return store.StoreDir + "/" + p.base }

// edgeTree returns the edge-case tree of that name.
func edgeTree(t testing.TB, name string) *testtree.Node {
	for _, tr := range testtree.EdgeCases() {
		if tr.Name == name {
			return tr.Root
		}
	}
	t.Fatalf("no edge-case tree %q", name)
	return nil
}

// testClosure returns store paths with references between them: leaves
// first, then paths whose files name the paths they refer to.
func testClosure(t testing.TB) []*testPath {
	ps := []*testPath{
		{name: "leaf", tree: testtree.File(testtree.Text("a leaf\n"))},
		{name: "hello-2.12", tree: edgeTree(t, "package-like")},
		{name: "links", tree: edgeTree(t, "symlinks")},
		{name: "chunky", tree: edgeTree(t, "chunk-sizes")},
		{name: "unicode", tree: edgeTree(t, "unicode-names")},
		{name: "odd-names", tree: edgeTree(t, "invalid-utf8-names")},
		{name: "empties", tree: edgeTree(t, "empty-files-and-dirs")},
		{name: "tools", tree: edgeTree(t, "executables")},
		{name: "a-link", tree: testtree.Link("/nix/store/00000000000000000000000000000000-elsewhere/bin")},
		{name: "app", refs: []int{0, 1, 9}},
		{name: "top", refs: []int{9, 2, 3, 4}},
	}
	for i, p := range ps {
		sum := sha256.Sum256([]byte("nixcas test path " + p.name))
		p.base = nixbase32.EncodeToString(sum[:20]) + "-" + p.name
		if p.tree == nil {
			// A path naming the paths it refers to, as built packages do.
			var b strings.Builder
			for _, r := range p.refs {
				if r != i {
					fmt.Fprintf(&b, "%s\n", ps[r].abs())
				}
			}
			p.tree = testtree.Dir(testtree.Entries{
				"bin":  testtree.Dir(testtree.Entries{p.name: testtree.Exec(testtree.Text("#!/bin/sh\n# " + b.String()))}),
				"refs": testtree.File(testtree.Text(b.String())),
				"self": testtree.Link(p.abs()),
			})
		}
		var nar bytes.Buffer
		if err := testtree.WriteNAR(&nar, p.tree); err != nil {
			t.Fatal(err)
		}
		p.nar = nar.Bytes()
		h := sha256.Sum256(p.nar)
		p.narHash = nixbase32.EncodeToString(h[:])
	}
	return ps
}

// narInfo returns p's narinfo for an uncompressed NAR at nar/<narhash>.nar,
// signed with keys.
func (p *testPath) narInfo(ps []*testPath, keys ...signature.SecretKey) *narinfo.NarInfo {
	h := sha256.Sum256(p.nar)
	ni := &narinfo.NarInfo{
		StorePath:   p.abs(),
		URL:         "nar/" + p.narHash + ".nar",
		Compression: "none",
		NarHash:     nixhash.MustNewHashWithEncoding(nixhash.SHA256, h[:], nixhash.NixBase32, true),
		NarSize:     uint64(len(p.nar)),
	}
	for _, r := range p.refs {
		ni.References = append(ni.References, ps[r].base)
	}
	slices.Sort(ni.References)
	for _, k := range keys {
		s, err := k.Sign(nil, ni.Fingerprint())
		if err != nil {
			panic(err)
		}
		ni.Signatures = append(ni.Signatures, s)
	}
	return ni
}

// writeCache writes ps as a file:// binary cache in dir, signed with keys.
func writeCache(t testing.TB, dir string, ps []*testPath, keys ...signature.SecretKey) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"nix-cache-info": []byte("StoreDir: /nix/store\n")}
	for _, p := range ps {
		files["nar/"+p.narHash+".nar"] = p.nar
		files[p.base[:32]+".narinfo"] = []byte(p.narInfo(ps, keys...).String())
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sourceStore makes a throwaway Nix store (a chroot store under a
// temporary directory) holding ps, signed by key, and returns its URL.
func sourceStore(t testing.TB, n *nix, ps []*testPath, key signature.SecretKey, pub string) string {
	t.Helper()
	dir := t.TempDir()
	writeCache(t, filepath.Join(dir, "cache"), ps, key)
	st := filepath.Join(dir, "store")
	args := []string{"copy", "--from", "file://" + filepath.Join(dir, "cache"), "--to", st,
		"--option", "trusted-public-keys", pub}
	for _, p := range ps {
		args = append(args, p.abs())
	}
	n.run("nix", args...)
	return st
}

// server is a nixcas binary cache on loopback.
type server struct {
	url   string
	cas   *pebblestore.Store // nil when the CAS is another store
	index *store.Index
}

// newStore opens a nixcas store in a temporary directory.
func newStore(t testing.TB) (*pebblestore.Store, *store.Index) {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, store.NewIndex(s, s)
}

// serve serves the store in o (a new one when o.CAS is nil) on loopback,
// keeping narinfos as `nixcas serve` does (1 MiB of them) unless o sets
// a narinfo cache or the index cannot report its changes.
func serve(t testing.TB, o httpcache.Options) *server {
	t.Helper()
	if o.CAS == nil {
		o.CAS, o.Index = newStore(t)
	}
	if _, ok := o.Index.(*store.Index); ok && o.NarInfoCacheSize == 0 {
		o.NarInfoCacheSize = 1 << 20
	}
	h, err := httpcache.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	pebble, _ := o.CAS.(*pebblestore.Store)
	index, _ := o.Index.(*store.Index)
	return &server{url: ts.URL, cas: pebble, index: index}
}

// netrc writes a netrc file giving password for 127.0.0.1.
func netrc(t testing.TB, password string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(f, []byte("machine 127.0.0.1\nlogin nixcas\npassword "+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// digestOf returns the digest of p's store path.
func digestOf(t testing.TB, p *testPath) store.PathDigest {
	d, err := store.ParsePathDigest(p.base[:32])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// listPaths returns the PathInfos in index by store path base name.
func listPaths(t testing.TB, index *store.Index) (map[string]*store.PathInfo, error) {
	m := map[string]*store.PathInfo{}
	err := index.List(t.Context(), func(p *store.PathInfo) error {
		m[p.Path] = p
		return nil
	})
	return m, err
}
