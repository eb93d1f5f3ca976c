package httpcache_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/server/httpcache"
)

const (
	testDrv         = "i6302s6n4wnd15ydankb16982lla0b2v-ca-out.drv"
	testRealisation = "sha256:dfadfabebd3c069ab0157ca7c9fe607813c88ee22d8f5886b2bafcae87116f3f!out"
	testBuildID     = "abcdef0123456789abcdef0123456789abcdef01"
)

// TestSideFiles: build logs, debug info links and realisations are kept
// as uploaded (bytes, Content-Type, Content-Encoding) and served back with
// GET and HEAD; bad names, contradicting realisations and oversized
// bodies are refused and leave nothing visible; uploads need the push
// token.
func TestSideFiles(t *testing.T) {
	const push, read = "push-token", "read-token"
	srv := serve(t, httpcache.Options{PushToken: push, ReadToken: read})
	auth := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	with := func(tok, ct, ce string) http.Header {
		h := auth(tok)
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if ce != "" {
			h.Set("Content-Encoding", ce)
		}
		return h
	}
	realisation := `{"dependentRealisations":{},"id":"` + testRealisation + `","outPath":"y7nripb9krm38wklxqfz83d2xfhr4skp-ca-out","signatures":[]}`
	xzLog := []byte("\xfd7zXZ\x00 not really xz, kept as it came")
	for _, tc := range []struct {
		name, path, ct, ce string
		body               []byte
	}{
		{"log", "/log/" + testDrv, "text/plain; charset=utf-8", "", []byte("building...\nok\n")},
		{"compressed log", "/log/" + testDrv[:32] + "-other.drv", "text/plain", "xz", xzLog},
		{"empty log", "/log/" + testDrv[:32] + "-empty.drv", "text/plain", "", []byte{}},
		{"debug info", "/debuginfo/" + testBuildID + ".debug", "application/json", "", []byte(`{"archive":"../nar/x.nar.xz","member":"lib/debug/.build-id/ab/cd.debug"}`)},
		{"debug info without .debug", "/debuginfo/" + testBuildID, "", "", []byte(`{}`)},
		{"realisation", "/realisations/" + testRealisation + ".doi", "application/json", "", []byte(realisation)},
		{"compressed realisation", "/realisations/" + strings.Replace(testRealisation, "!out", "!dev", 1) + ".doi", "application/json", "br", []byte("\x0b\x02\x80not checked when compressed")},
	} {
		if code, body, _ := fetch(t, http.MethodPut, srv.url+tc.path, with(push, tc.ct, tc.ce), tc.body); code != http.StatusCreated {
			t.Errorf("%s: PUT %s: %d %s, want 201", tc.name, tc.path, code, body)
			continue
		}
		code, body, hdr := fetch(t, http.MethodGet, srv.url+tc.path, with(read, "", ""), nil)
		wantCT := tc.ct
		if wantCT == "" {
			wantCT = "application/octet-stream"
		}
		if code != http.StatusOK || body != string(tc.body) || hdr.Get("Content-Type") != wantCT || hdr.Get("Content-Encoding") != tc.ce {
			t.Errorf("%s: GET %s: %d %q, Content-Type %q, Content-Encoding %q; want 200 %q, %q, %q",
				tc.name, tc.path, code, body, hdr.Get("Content-Type"), hdr.Get("Content-Encoding"), tc.body, wantCT, tc.ce)
		}
		code, body, hdr = fetch(t, http.MethodHead, srv.url+tc.path, with(read, "", ""), nil)
		if code != http.StatusOK || body != "" || hdr.Get("Content-Length") != itoa(len(tc.body)) {
			t.Errorf("%s: HEAD %s: %d, Content-Length %q; want 200, %d", tc.name, tc.path, code, hdr.Get("Content-Length"), len(tc.body))
		}
	}

	// A second PUT replaces the first, as Nix's upsertFile expects.
	fetch(t, http.MethodPut, srv.url+"/log/"+testDrv, with(push, "text/plain", ""), []byte("rebuilt\n"))
	if got := get(t, srv.url+"/log/"+testDrv, auth(read)); got != "rebuilt\n" {
		t.Errorf("log after a second PUT: %q", got)
	}

	big := bytes.Repeat([]byte("{}"), 1<<19) // 1 MiB
	for _, tc := range []struct {
		name, path string
		hdr        http.Header
		body       io.Reader
		want       int
	}{
		{"no token", "/log/" + testDrv[:32] + "-x.drv", nil, strings.NewReader("x"), http.StatusUnauthorized},
		{"read token", "/log/" + testDrv[:32] + "-x.drv", auth(read), strings.NewReader("x"), http.StatusForbidden},
		{"log of no store path", "/log/hello.drv", auth(push), strings.NewReader("x"), http.StatusBadRequest},
		{"log named ..", "/log/" + testDrv[:33] + "..", auth(push), strings.NewReader("x"), http.StatusBadRequest},
		{"debug info not hex", "/debuginfo/xyz.debug", auth(push), strings.NewReader("{}"), http.StatusBadRequest},
		{"realisation without .doi", "/realisations/" + testRealisation, auth(push), strings.NewReader(realisation), http.StatusBadRequest},
		{"realisation of another id", "/realisations/" + strings.Replace(testRealisation, "!out", "!lib", 1) + ".doi", auth(push), strings.NewReader(realisation), http.StatusBadRequest},
		{"realisation not JSON", "/realisations/" + strings.Replace(testRealisation, "!out", "!bin", 1) + ".doi", auth(push), strings.NewReader("{"), http.StatusBadRequest},
		{"realisation with a bad outPath", "/realisations/" + strings.Replace(testRealisation, "!out", "!doc", 1) + ".doi", auth(push),
			strings.NewReader(strings.Replace(realisation, `"outPath":"y7n`, `"outPath":"/nix/store/y7n`, 1)), http.StatusBadRequest},
		// Streamed (no Content-Length), one byte more than allowed.
		{"debug info over 1 MiB", "/debuginfo/" + testBuildID[:38] + "ff.debug", auth(push),
			io.MultiReader(bytes.NewReader(big), strings.NewReader("x")), http.StatusRequestEntityTooLarge},
		{"other kind", "/logs/" + testDrv, auth(push), strings.NewReader("x"), http.StatusNotFound},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.url+tc.path, io.NopCloser(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: PUT %s: %d %s, want %d", tc.name, tc.path, resp.StatusCode, msg, tc.want)
		}
		if code, _, _ := fetch(t, http.MethodGet, srv.url+tc.path, auth(push), nil); code != http.StatusNotFound {
			t.Errorf("%s: GET after a refused PUT: %d, want 404", tc.name, code)
		}
	}
	// A declared length over the bound is refused before reading.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.url+"/realisations/"+testRealisation+".doi", bytes.NewReader(append(big, 'x')))
	req.Header.Set("Authorization", "Bearer "+push)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("realisation of 1 MiB + 1: %d, want 413", resp.StatusCode)
	}
	if got := get(t, srv.url+"/realisations/"+testRealisation+".doi", auth(read)); got != realisation {
		t.Errorf("realisation after a refused replacement: %q", got)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestNixSideFiles: real Nix 2.8 uploads a content-addressed derivation's
// output with its realisation (ca-derivations), the .drv, a path with
// debug info (index-debug-info=1) and the build log (nix store copy-log);
// another Nix then reads the log with `nix log` and substitutes the
// output through its realisation.
func TestNixSideFiles(t *testing.T) {
	n := newNix(t)
	n.env = append(n.env, "NIX_CONFIG=substituters =\nexperimental-features = nix-command ca-derivations")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	expr := filepath.Join(dir, "ca.nix")
	// builtin:buildenv builds without a shell, so the chroot store needs
	// nothing else; it makes an empty output.
	writeFile(t, expr, `derivation { name = "ca-out"; system = builtins.currentSystem; builder = "builtin:buildenv";
		manifest = "/dev/null"; derivations = ""; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; }`)
	var built []struct {
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(n.run("nix", "build", "--store", src, "--no-link", "--json", "-f", expr)), &built); err != nil || len(built) != 1 {
		t.Fatalf("nix build --json: %v %+v", err, built)
	}
	drvPath, outPath := built[0].DrvPath, built[0].Outputs["out"]

	// The build log, where a local store keeps it.
	base := filepath.Base(drvPath)
	logFile := filepath.Join(src, "nix/var/log/nix/drvs", base[:2], base[2:])
	const buildLog = "configuring\nbuilding ca-out\ndone\n"
	writeFile(t, logFile, buildLog)

	// A path with debug info, as a package's "debug" output has.
	dbg := filepath.Join(dir, "dbg")
	writeFile(t, filepath.Join(dbg, "lib/debug/.build-id", testBuildID[:2], testBuildID[2:]+".debug"), "\x7fELF debug symbols")
	dbgPath := strings.TrimSpace(n.run("nix-store", "--store", src, "--add", dbg))

	const token = "push-secret"
	srv := serve(t, httpcache.Options{PushToken: token})
	rc := netrc(t, token)
	n.run("nix", "copy", "--store", src, "--to", srv.url+"?index-debug-info=1", "--option", "netrc-file", rc, "-f", expr)
	n.run("nix", "copy", "--store", src, "--to", srv.url+"?index-debug-info=1", "--option", "netrc-file", rc, "--derivation", drvPath)
	n.run("nix", "copy", "--store", src, "--to", srv.url+"?index-debug-info=1", "--option", "netrc-file", rc, dbgPath)
	n.run("nix", "store", "copy-log", "--store", src, "--to", srv.url, "--option", "netrc-file", rc, drvPath)

	client := newNix(t)
	client.env = append(client.env, "NIX_CONFIG=substituters =\nexperimental-features = nix-command ca-derivations")
	for _, p := range []string{drvPath, outPath} {
		if got := client.run("nix", "log", "--store", srv.url, p); got != buildLog {
			t.Errorf("nix log --store %s %s: %q, want %q", srv.url, p, got, buildLog)
		}
	}

	var link struct{ Archive, Member string }
	if err := json.Unmarshal([]byte(get(t, srv.url+"/debuginfo/"+testBuildID+".debug", nil)), &link); err != nil {
		t.Fatal(err)
	}
	if want := "lib/debug/.build-id/" + testBuildID[:2] + "/" + testBuildID[2:] + ".debug"; link.Member != want || !strings.HasPrefix(link.Archive, "../nar/") {
		t.Errorf("debug info link %+v, want member %s in ../nar/…", link, want)
	}

	// Another store substitutes the output of the derivation through the
	// realisation the server keeps.
	dst := filepath.Join(t.TempDir(), "dst")
	client.run("nix", "copy", "--no-check-sigs", "--from", srv.url, "--to", dst, "-f", expr)
	got := client.pathInfos(dst, outPath)
	if got[outPath].Valid != nil && !*got[outPath].Valid || got[outPath].Path != outPath {
		t.Errorf("%s not copied through its realisation: %+v", outPath, got)
	}
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
