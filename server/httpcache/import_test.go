package httpcache_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/server/httpcache"
)

// TestImport: binary caches that real Nix wrote with every compression are
// imported, checked and served again; signatures are kept; a second run
// skips everything.
func TestImport(t *testing.T) {
	n := newNix(t)
	upKey, upPub := n.keyPair("uploader-1")
	ps := testClosure(t)
	src := sourceStore(t, n, ps, upKey, upPub)
	want := n.pathInfos(src)
	// Nix compresses slowly with brotli (quality 11), xz and bzip2: those
	// get the closure of "app" only, without the largest path.
	small := []*testPath{ps[0], ps[1], ps[9]}

	for _, compression := range []string{"none", "xz", "zstd", "bzip2", "br"} {
		t.Run(compression, func(t *testing.T) {
			ps := ps
			if compression != "none" && compression != "zstd" {
				ps = small
			}
			dir := filepath.Join(t.TempDir(), "cache")
			n.run("nix", append([]string{"copy", "--from", src, "--to", "file://" + dir + "?compression=" + compression}, paths(ps)...)...)
			source, err := httpcache.OpenSource(dir)
			if err != nil {
				t.Fatal(err)
			}
			cas, index := newStore(t)
			o := httpcache.ImportOptions{CAS: cas, Index: index, Source: source}
			st, err := httpcache.Import(t.Context(), o)
			if err != nil || st.Imported != len(ps) || st.Failed != 0 {
				t.Fatalf("Import: %+v, %v", st, err)
			}
			st, err = httpcache.Import(t.Context(), o)
			if err != nil || st.Skipped != len(ps) || st.Imported != 0 {
				t.Fatalf("Import again: %+v, %v", st, err)
			}
			srv := serve(t, httpcache.Options{CAS: cas, Index: index})
			c := newNix(t)
			dst := filepath.Join(t.TempDir(), "store")
			c.run("nix", append([]string{"copy", "--from", srv.url, "--to", dst, "--option", "trusted-public-keys", upPub}, paths(ps)...)...)
			got := c.pathInfos(dst)
			if len(got) != len(ps) {
				t.Errorf("%d paths copied back, want %d", len(got), len(ps))
			}
			for _, p := range ps {
				if w, g := want[p.abs()], got[p.abs()]; g.NarHash != w.NarHash || g.NarSize != w.NarSize {
					t.Errorf("%s: %s, %d bytes, want %s, %d bytes", p.base, g.NarHash, g.NarSize, w.NarHash, w.NarSize)
				}
			}
		})
	}
}

// TestImportHTTP: an HTTP cache is listed from its index page, or imported
// path by path with closures; an interrupted import resumes.
func TestImportHTTP(t *testing.T) {
	n := newNix(t)
	upKey, upPub := n.keyPair("uploader-1")
	ps := testClosure(t)
	src := sourceStore(t, n, ps, upKey, upPub)
	dir := filepath.Join(t.TempDir(), "cache")
	n.run("nix", append([]string{"copy", "--from", src, "--to", "file://" + dir + "?compression=zstd"}, paths(ps)...)...)
	ts := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(ts.Close)
	source, err := httpcache.OpenSource(ts.URL)
	if err != nil {
		t.Fatal(err)
	}

	// The closure of "app" (leaf, hello, app) only, references first.
	cas, index := newStore(t)
	var order []string
	st, err := httpcache.Import(t.Context(), httpcache.ImportOptions{
		CAS: cas, Index: index, Source: source, Paths: []string{ps[9].abs()}, Jobs: 1,
		Events: func(e httpcache.ImportEvent) {
			if e.Kind == httpcache.ImportDone {
				order = append(order, e.Path)
			}
		},
	})
	if err != nil || st.Imported != 3 {
		t.Fatalf("Import of a closure: %+v, %v", st, err)
	}
	if order[2] != ps[9].abs() {
		t.Errorf("import order %v: the referrer is not last", order)
	}

	// Everything, interrupted after two paths, then resumed.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := 0
	_, err = httpcache.Import(ctx, httpcache.ImportOptions{
		CAS: cas, Index: index, Source: source, Jobs: 1,
		Events: func(e httpcache.ImportEvent) {
			if e.Kind == httpcache.ImportDone {
				if done++; done == 2 {
					cancel()
				}
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Import: %v", err)
	}
	st, err = httpcache.Import(t.Context(), httpcache.ImportOptions{CAS: cas, Index: index, Source: source})
	if err != nil || st.Skipped != 3+done || st.Imported != len(ps)-3-done || st.Failed != 0 {
		t.Fatalf("resumed Import: %+v, %v (%d done before)", st, err, done)
	}
	infos, err := listPaths(t, index)
	if err != nil || len(infos) != len(ps) {
		t.Fatalf("%d paths in the store, want %d (%v)", len(infos), len(ps), err)
	}
	for _, p := range ps {
		info := infos[p.base]
		if len(info.Signatures) != 1 || info.Signatures[0].Name != "uploader-1" {
			t.Errorf("%s: signatures %v, want the uploader's", p.base, info.Signatures)
		}
	}
}

// TestImportCorrupt: a NAR that does not match its narinfo is not imported,
// nor are the paths that refer to it.
func TestImportCorrupt(t *testing.T) {
	ps := testClosure(t)
	dir := t.TempDir()
	writeCache(t, dir, ps)
	// Damage the NAR of "hello" (index 1), which "app" and "top" need.
	nar := filepath.Join(dir, "nar", ps[1].narHash+".nar")
	b, err := os.ReadFile(nar)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 1
	if err := os.WriteFile(nar, b, 0o644); err != nil {
		t.Fatal(err)
	}
	source, err := httpcache.OpenSource("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	cas, index := newStore(t)
	failed := map[string]error{}
	st, err := httpcache.Import(t.Context(), httpcache.ImportOptions{
		CAS: cas, Index: index, Source: source,
		Events: func(e httpcache.ImportEvent) {
			if e.Kind == httpcache.ImportFailed {
				failed[e.Path] = e.Err
			}
		},
	})
	if err != nil || st.Failed != 3 || st.Imported != len(ps)-3 {
		t.Fatalf("Import: %+v, %v; failed: %v", st, err, failed)
	}
	for _, i := range []int{1, 9, 10} {
		if failed[ps[i].abs()] == nil {
			t.Errorf("%s did not fail (failed: %v)", ps[i].base, failed)
		}
		if _, err := index.Get(t.Context(), digestOf(t, ps[i])); err == nil {
			t.Errorf("%s is in the store", ps[i].base)
		}
	}
}
