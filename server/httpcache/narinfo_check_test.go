package httpcache_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixcas/nixcas/server/httpcache"
)

// TestNarInfoFieldsChecked: a narinfo with a StorePath outside /nix/store
// or with a name Nix forbids, with references the cache does not hold, or
// without URL is refused with 400 naming the field, and nothing becomes
// visible; a self-reference is fine.
func TestNarInfoFieldsChecked(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	p := ps[0] // the leaf, no references
	ni := p.narInfo(ps)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, nil, p.nar); code != http.StatusCreated {
		t.Fatalf("PUT NAR: %d %s", code, body)
	}
	hash := p.base[:32]
	for _, tc := range []struct {
		name, field string
		change      func(text string) string
	}{
		{"store path in /tmp/store", "StorePath", func(s string) string {
			return strings.Replace(s, "StorePath: /nix/store/", "StorePath: /tmp/store/", 1)
		}},
		{"store path in a subdirectory", "StorePath", func(s string) string {
			return strings.Replace(s, "StorePath: /nix/store/", "StorePath: /nix/store/x/", 1)
		}},
		{"name ..", "StorePath", func(s string) string { return strings.Replace(s, p.base, hash+"-..", 1) }},
		{"name .hidden", "StorePath", func(s string) string { return strings.Replace(s, p.base, hash+"-.hidden", 1) }},
		{"reference not in the cache", "References", func(s string) string {
			return strings.Replace(s, "References: ", "References: "+ps[1].base, 1)
		}},
		{"reference named .x", "References", func(s string) string {
			return strings.Replace(s, "References: ", "References: "+ps[1].base[:33]+".x", 1)
		}},
		{"deriver named .drv", "Deriver", func(s string) string {
			return strings.Replace(s, "References: ", "Deriver: "+ps[1].base[:33]+".drv\nReferences: ", 1)
		}},
		{"no URL", "URL", func(s string) string {
			return strings.Replace(s, "URL: "+ni.URL+"\n", "", 1)
		}},
	} {
		text := tc.change(ni.String())
		if text == ni.String() {
			t.Fatalf("%s: the change changed nothing", tc.name)
		}
		code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+hash+".narinfo", nil, []byte(text))
		if code != http.StatusBadRequest || !strings.Contains(body, tc.field) {
			t.Errorf("%s: %d %q, want 400 naming %s", tc.name, code, body, tc.field)
		}
		if code, body, _ := fetch(t, http.MethodGet, srv.url+"/"+hash+".narinfo", nil, nil); code != http.StatusNotFound {
			t.Errorf("%s: narinfo visible after a refused upload (%d):\n%s", tc.name, code, body)
		}
	}

	// A reference to itself and to a path held are fine.
	self := strings.Replace(ni.String(), "References: ", "References: "+p.base, 1)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+hash+".narinfo", nil, []byte(self)); code != http.StatusCreated {
		t.Fatalf("narinfo referring to itself: %d %s", code, body)
	}
	q := ps[9] // app: refers to ps[0], ps[1] and itself
	qi := q.narInfo(ps)
	fetch(t, http.MethodPut, srv.url+"/"+qi.URL, nil, q.nar)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+q.base[:32]+".narinfo", nil, []byte(qi.String())); code != http.StatusBadRequest || !strings.Contains(body, ps[1].base) {
		t.Errorf("narinfo of %s before its reference %s: %d %q, want 400 naming it", q.base, ps[1].base, code, body)
	}
	uploadAll(t, srv, ps[1:2], nil)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+q.base[:32]+".narinfo", nil, []byte(qi.String())); code != http.StatusCreated {
		t.Errorf("narinfo of %s after its references: %d %s", q.base, code, body)
	}
}

// TestNixContentAddressed: content-addressed paths made by real Nix
// (nix-store --add, --add-fixed flat and recursive with several hashes,
// builtins.toFile with and without references) upload with `nix copy`
// and their content addresses are served; a narinfo whose CA contradicts
// the path or the NAR is refused with 400 naming the mismatch, and the
// path keeps its valid, signed narinfo.
func TestNixContentAddressed(t *testing.T) {
	n := newNix(t)
	n.env = append(n.env, "NIX_CONFIG=substituters =")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(dir, "hello.txt"), "hello nixcas\n")
	writeFile(t, filepath.Join(dir, "tree/sub/a"), "a\n")
	if err := os.Symlink("sub/a", filepath.Join(dir, "tree/link")); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, args := range [][]string{
		{"--add", "hello.txt"},
		{"--add", "tree"},
		{"--add-fixed", "sha256", "hello.txt"},
		{"--add-fixed", "sha1", "hello.txt"},
		{"--add-fixed", "md5", "hello.txt"},
		{"--add-fixed", "--recursive", "sha1", "tree"},
		{"--add-fixed", "--recursive", "sha512", "hello.txt"},
	} {
		for i, a := range args {
			if a == "hello.txt" || a == "tree" {
				args[i] = filepath.Join(dir, a)
			}
		}
		paths = append(paths, strings.TrimSpace(n.run("nix-store", append([]string{"--store", src}, args...)...)))
	}
	var texts []string
	out := n.run("nix-instantiate", "--store", src, "--read-write-mode", "--eval", "--strict", "--json", "-E",
		`let a = builtins.toFile "a.txt" "x"; in [ a (builtins.toFile "b.txt" "ref ${a}") ]`)
	if err := json.Unmarshal([]byte(out), &texts); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	paths = append(paths, texts...)

	key, pub := n.keyPair("nixcas-1")
	srv := serve(t, httpcache.Options{SignKeys: []signature.SecretKey{key}})
	n.run("nix", append([]string{"copy", "--store", src, "--to", srv.url}, paths...)...)

	type caInfo struct {
		Path string `json:"path"`
		CA   string `json:"ca"`
	}
	var want, got []caInfo
	if err := json.Unmarshal([]byte(n.run("nix", append([]string{"path-info", "--json", "--store", src}, paths...)...)), &want); err != nil {
		t.Fatal(err)
	}
	client := newNix(t)
	if err := json.Unmarshal([]byte(client.run("nix", append([]string{"path-info", "--json", "--store", srv.url}, paths...)...)), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(paths) {
		t.Fatalf("the server has %d of the %d paths: %+v", len(got), len(paths), got)
	}
	for i := range want {
		if want[i].CA == "" || got[i] != want[i] {
			t.Errorf("on the server: %+v, in Nix's store: %+v", got[i], want[i])
		}
	}

	// Forged narinfos for the path `nix-store --add hello.txt` made.
	byPath := map[string]caInfo{}
	for _, w := range want {
		byPath[w.Path] = w
	}
	hello := byPath[paths[0]]
	other := byPath[paths[1]].CA // of tree: another NAR's hash
	if !strings.HasPrefix(hello.CA, "fixed:r:sha256:") || !strings.HasPrefix(other, "fixed:r:sha256:") {
		t.Fatalf("nix-store --add made %+v and %s", hello, other)
	}
	hash := filepath.Base(hello.Path)[:32]
	orig := get(t, srv.url+"/"+hash+".narinfo", nil)
	for _, tc := range []struct {
		name, text, says string
	}{
		{"CA of another NAR", strings.Replace(orig, "CA: "+hello.CA, "CA: "+other, 1), "gives store path"},
		{"flat CA of the same hash", strings.Replace(orig, "CA: fixed:r:", "CA: fixed:", 1), "gives store path"},
		{"unknown CA", strings.Replace(orig, "CA: fixed:r:", "CA: fixed:q:", 1), "content address"},
	} {
		code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+hash+".narinfo", nil, []byte(tc.text))
		if code != http.StatusBadRequest || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.name, code, body, tc.says)
		}
	}
	if now := get(t, srv.url+"/"+hash+".narinfo", nil); now != orig {
		t.Errorf("narinfo after refused uploads:\n%s\nwant:\n%s", now, orig)
	}
	// The narinfo still verifies with the server's key for a fresh store.
	client.run("nix", "copy", "--from", srv.url, "--to", filepath.Join(t.TempDir(), "dst"), "--option", "trusted-public-keys", pub, hello.Path)
}

// TestNixSelfReferenceCA: paths that refer to themselves, made
// content-addressed by `nix store make-content-addressed` (Nix hashes them
// modulo their own hash part), upload with `nix copy`; the NAR of another
// path under such a path's narinfo is refused.
func TestNixSelfReferenceCA(t *testing.T) {
	n := newNix(t)
	key, pub := n.keyPair("uploader-1")
	ps := testClosure(t)
	src := sourceStore(t, n, ps, key, pub)
	app := ps[9] // refers to itself, to ps[0] and to ps[1]
	var made struct {
		Rewrites map[string]string `json:"rewrites"`
	}
	if err := json.Unmarshal([]byte(n.run("nix", "store", "make-content-addressed", "--store", src, "--json", app.abs())), &made); err != nil {
		t.Fatal(err)
	}
	caApp := made.Rewrites[app.abs()]
	if caApp == "" {
		t.Fatalf("make-content-addressed rewrote %v, not %s", made.Rewrites, app.abs())
	}
	srv := serve(t, httpcache.Options{})
	n.run("nix", "copy", "--store", src, "--to", srv.url, caApp)

	var infos []struct {
		Path       string   `json:"path"`
		CA         string   `json:"ca"`
		References []string `json:"references"`
	}
	if err := json.Unmarshal([]byte(newNix(t).run("nix", "path-info", "--json", "--store", srv.url, caApp)), &infos); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || !strings.HasPrefix(infos[0].CA, "fixed:r:sha256:") || !slices.Contains(infos[0].References, caApp) {
		t.Fatalf("on the server: %+v, want %s with a CA and a reference to itself", infos, caApp)
	}

	// Another NAR (ps[0]'s, already uploaded) under the path's narinfo.
	hash := filepath.Base(caApp)[:32]
	orig := get(t, srv.url+"/"+hash+".narinfo", nil)
	other := ps[0].narInfo(ps)
	var forged strings.Builder
	for line := range strings.Lines(orig) {
		switch {
		case strings.HasPrefix(line, "URL: "):
			line = "URL: " + other.URL + "\n"
		case strings.HasPrefix(line, "FileHash: "), strings.HasPrefix(line, "FileSize: "):
			continue
		case strings.HasPrefix(line, "NarHash: "):
			line = "NarHash: " + other.NarHash.String() + "\n"
		case strings.HasPrefix(line, "NarSize: "):
			line = "NarSize: " + itoa(int(other.NarSize)) + "\n"
		}
		forged.WriteString(line)
	}
	fetch(t, http.MethodPut, srv.url+"/"+other.URL, nil, ps[0].nar)
	code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+hash+".narinfo", nil, []byte(forged.String()))
	if code != http.StatusBadRequest || !strings.Contains(body, "contents hash to") {
		t.Errorf("another NAR under %s: %d %q, want 400 saying the contents differ", caApp, code, body)
	}
	if now := get(t, srv.url+"/"+hash+".narinfo", nil); now != orig {
		t.Errorf("narinfo after a refused upload:\n%s\nwant:\n%s", now, orig)
	}
}
