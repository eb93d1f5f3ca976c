package httpcache_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/server/httpcache"
)

// TestUploadRefused: a narinfo that does not match the NAR put before it,
// or names no NAR, is refused with 400 and leaves nothing visible.
func TestUploadRefused(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	p := ps[1]
	ni := p.narInfo(ps)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, nil, p.nar); code != http.StatusCreated {
		t.Fatalf("PUT NAR: %d %s", code, body)
	}
	otherSum := sha256.Sum256([]byte("other"))
	for _, tc := range []struct {
		name   string
		change func(text string) string
	}{
		{"wrong NarHash", func(s string) string {
			return strings.Replace(s, "NarHash: sha256:"+p.narHash, "NarHash: sha256:"+nixbase32.EncodeToString(otherSum[:]), 1)
		}},
		{"wrong NarSize", func(s string) string {
			return strings.Replace(s, "NarSize: ", "NarSize: 1", 1)
		}},
		{"wrong FileSize", func(s string) string {
			return strings.Replace(s, "NarSize: ", "FileSize: 12\nNarSize: ", 1)
		}},
		{"no NAR put", func(s string) string {
			s = strings.Replace(s, "URL: nar/"+p.narHash, "URL: nar/"+nixbase32.EncodeToString(otherSum[:]), 1)
			return strings.Replace(s, "NarHash: sha256:"+p.narHash, "NarHash: sha256:"+nixbase32.EncodeToString(otherSum[:]), 1)
		}},
		{"other store path", func(s string) string { return strings.Replace(s, p.base, ps[2].base, 1) }},
		{"malformed", func(s string) string { return s + "Bogus line\n" }},
	} {
		text := tc.change(ni.String())
		code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+p.base[:32]+".narinfo", nil, []byte(text))
		if code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tc.name, code, body)
		}
		if code, _, _ := fetch(t, http.MethodGet, srv.url+"/"+p.base[:32]+".narinfo", nil, nil); code != http.StatusNotFound {
			t.Errorf("%s: narinfo visible after a refused upload (%d)", tc.name, code)
		}
	}
	// A NAR that is not one.
	if code, _, _ := fetch(t, http.MethodPut, srv.url+"/nar/x.nar.xz", nil, []byte("not a NAR at all")); code != http.StatusBadRequest {
		t.Errorf("PUT of garbage: %d, want 400", code)
	}
	if code, _, _ := fetch(t, http.MethodPut, srv.url+"/nar/x.nar", nil, p.nar[:len(p.nar)-8]); code != http.StatusBadRequest {
		t.Errorf("PUT of a truncated NAR: %d, want 400", code)
	}
	// The right narinfo is still accepted.
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+p.base[:32]+".narinfo", nil, []byte(ni.String())); code != http.StatusCreated {
		t.Fatalf("PUT narinfo: %d %s", code, body)
	}
	// A second path with the same NAR needs no second upload.
	twin := *p
	sum := sha256.Sum256([]byte("twin"))
	twin.base = nixbase32.EncodeToString(sum[:20]) + "-twin"
	tni := twin.narInfo(ps)
	if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+twin.base[:32]+".narinfo", nil, []byte(tni.String())); code != http.StatusCreated {
		t.Fatalf("PUT narinfo of a twin: %d %s", code, body)
	}
	get(t, srv.url+"/"+twin.base[:32]+".narinfo", nil)
}

// TestNotFound: unknown and malformed names are 404.
func TestNotFound(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{Priority: 30})
	uploadAll(t, srv, ps[:1], nil)
	if got := get(t, srv.url+"/nix-cache-info", nil); got != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" {
		t.Errorf("nix-cache-info:\n%s", got)
	}
	unknown := strings.Repeat("0", 32)
	unknownNAR := strings.Repeat("0", 52)
	for _, path := range []string{
		"/" + unknown + ".narinfo", "/" + unknown + ".ls", "/xyz.narinfo", "/" + ps[1].base[:32] + ".narinfo",
		"/nar/" + unknownNAR + ".nar", "/nar/" + unknownNAR + ".nar.zst", "/nar/" + ps[0].narHash + ".nar.xz", "/nar/abc.nar",
		"/", "/other",
	} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			if code, _, _ := fetch(t, m, srv.url+path, nil, nil); code != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 404", m, path, code)
			}
		}
	}
	for _, path := range []string{"/" + ps[0].base[:32] + ".narinfo", "/nar/" + ps[0].narHash + ".nar"} {
		if code, _, _ := fetch(t, http.MethodHead, srv.url+path, nil, nil); code != http.StatusOK {
			t.Errorf("HEAD %s: %d, want 200", path, code)
		}
	}
}

// TestAuth: tokens as bearer or basic-auth password; 401 without one, 403
// with a wrong one; Nix reads and writes with a netrc file.
func TestAuth(t *testing.T) {
	ps := testClosure(t)
	const push, read = "push-token", "read-token"
	srv := serve(t, httpcache.Options{PushToken: push, ReadToken: read})
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	basic := func(tok string) http.Header {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth("anyone", tok)
		return r.Header
	}
	p := ps[0]
	ni := p.narInfo(ps)
	narURL := srv.url + "/" + ni.URL
	for _, tc := range []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong bearer", bearer("nope"), http.StatusForbidden},
		{"read token", bearer(read), http.StatusForbidden},
		{"wrong password", basic("nope"), http.StatusForbidden},
		{"push token as password", basic(push), http.StatusCreated},
		{"push token as bearer", bearer(push), http.StatusCreated},
	} {
		code, _, hdr := fetch(t, http.MethodPut, narURL, tc.hdr, p.nar)
		if code != tc.want {
			t.Errorf("PUT with %s: %d, want %d", tc.name, code, tc.want)
		}
		if code == http.StatusUnauthorized && !strings.Contains(strings.Join(hdr.Values("WWW-Authenticate"), ","), "Basic") {
			t.Errorf("401 without a Basic challenge: %v", hdr)
		}
	}
	if code, _, _ := fetch(t, http.MethodPut, srv.url+"/"+p.base[:32]+".narinfo", bearer(push), []byte(ni.String())); code != http.StatusCreated {
		t.Fatalf("PUT narinfo: %d", code)
	}
	narinfoURL := srv.url + "/" + p.base[:32] + ".narinfo"
	for _, tc := range []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong token", bearer("nope"), http.StatusForbidden},
		{"read token", bearer(read), http.StatusOK},
		{"read token as password", basic(read), http.StatusOK},
		{"push token", bearer(push), http.StatusOK},
	} {
		if code, _, _ := fetch(t, http.MethodGet, narinfoURL, tc.hdr, nil); code != tc.want {
			t.Errorf("GET with %s: %d, want %d", tc.name, code, tc.want)
		}
	}

	// Nix with and without the read token in its netrc.
	n := newNix(t)
	copyFrom := func(rc string) error {
		args := []string{"copy", "--no-check-sigs", "--from", srv.url, "--to", filepath.Join(t.TempDir(), "store"), p.abs()}
		if rc != "" {
			args = append(args, "--option", "netrc-file", rc)
		}
		_, _, err := n.try("nix", args...)
		return err
	}
	if err := copyFrom(netrc(t, read)); err != nil {
		t.Errorf("nix copy with the read token: %v", err)
	}
	if err := copyFrom(""); err == nil {
		t.Errorf("nix copy without a token succeeded")
	}
}

// TestOptions: bad options are refused; metrics land in the registry, also
// for a second handler on the same registry.
func TestOptions(t *testing.T) {
	cas, index := newStore(t)
	for _, o := range []httpcache.Options{
		{},
		{CAS: cas, Index: index, Compression: "xz"},
		{CAS: cas, Index: index, SignKeys: []signature.SecretKey{{}}},
		{CAS: cas, Index: index, Priority: -1},
	} {
		if _, err := httpcache.New(o); !errors.Is(err, httpcache.ErrInvalid) {
			t.Errorf("New(%+v): %v, want ErrInvalid", o, err)
		}
	}
	reg := prometheus.NewRegistry()
	srv := serve(t, httpcache.Options{CAS: cas, Index: index, Registerer: reg})
	serve(t, httpcache.Options{CAS: cas, Index: index, Registerer: reg})
	ps := testClosure(t)
	uploadAll(t, srv, ps[:2], nil)
	get(t, srv.url+"/"+ps[1].base[:32]+".narinfo", nil)
	get(t, srv.url+"/nar/"+ps[1].narHash+".nar", nil)
	fetch(t, http.MethodGet, srv.url+"/"+strings.Repeat("0", 32)+".narinfo", nil, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			counts[key] = m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"nixcas_http_requests_total,code=200,kind=narinfo":        1,
		"nixcas_http_requests_total,code=404,kind=narinfo":        1,
		"nixcas_http_requests_total,code=201,kind=narinfo-upload": 2,
		"nixcas_http_requests_total,code=201,kind=nar-upload":     2,
		"nixcas_http_nar_bytes_served_total":                      float64(len(ps[1].nar)),
	} {
		if counts[key] != want {
			t.Errorf("%s = %v, want %v", key, counts[key], want)
		}
	}
}

// TestSignatureFingerprint: the server's signature verifies against the
// fingerprint go-nix computes from the narinfo served.
func TestSignatureFingerprint(t *testing.T) {
	key, pub, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err = signature.LoadSecretKey(key.String())
	if err != nil {
		t.Fatal(err)
	}
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{SignKeys: []signature.SecretKey{key}})
	uploadAll(t, srv, ps, nil)
	for _, p := range ps {
		info, err := srv.index.Get(t.Context(), digestOf(t, p))
		if err != nil {
			t.Fatal(err)
		}
		text := get(t, srv.url+"/"+p.base[:32]+".narinfo", nil)
		var sig signature.Signature
		for line := range strings.Lines(text) {
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Sig: "); ok {
				if sig, err = signature.ParseSignature(s); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !pub.Verify(info.Fingerprint(), sig) || !pub.Verify(p.narInfo(ps).Fingerprint(), sig) {
			t.Errorf("%s: signature does not verify:\n%s", p.base, text)
		}
		if h := nixhash.MustNewHashWithEncoding(nixhash.SHA256, info.NARSha256[:], nixhash.NixBase32, true); !strings.Contains(text, "NarHash: "+h.String()+"\n") {
			t.Errorf("%s: narinfo lacks NarHash %s:\n%s", p.base, h, text)
		}
	}
}

// TestAuthWritesRefused: with a read token and no push token, or with
// anonymous writes refused, every PUT is refused (403) whatever it
// carries, while reads follow the read token.
func TestAuthWritesRefused(t *testing.T) {
	ps := testClosure(t)
	p := ps[0]
	narURL := "/" + p.narInfo(ps).URL
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name     string
		o        httpcache.Options
		hdr      http.Header
		wantPut  int
		wantInfo int
	}{
		{"read token, none given", httpcache.Options{ReadToken: "r"}, nil, http.StatusForbidden, http.StatusUnauthorized},
		{"read token, read token given", httpcache.Options{ReadToken: "r"}, bearer("r"), http.StatusForbidden, http.StatusOK},
		{"anonymous writes refused", httpcache.Options{RefuseAnonymousWrites: true}, nil, http.StatusForbidden, http.StatusOK},
		{"anonymous writes refused, a token given", httpcache.Options{RefuseAnonymousWrites: true}, bearer("x"), http.StatusForbidden, http.StatusOK},
		{"anonymous writes refused, push token", httpcache.Options{RefuseAnonymousWrites: true, PushToken: "p"}, bearer("p"), http.StatusCreated, http.StatusOK},
		{"open", httpcache.Options{}, nil, http.StatusCreated, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, tc.o)
			code, body, _ := fetch(t, http.MethodPut, srv.url+narURL, tc.hdr, p.nar)
			if code != tc.wantPut {
				t.Errorf("PUT NAR: %d %q, want %d", code, body, tc.wantPut)
			}
			if code == http.StatusForbidden && !strings.Contains(body, "uploads are disabled") {
				t.Errorf("PUT NAR refused with %q, want it to say uploads are disabled", body)
			}
			if code, _, _ := fetch(t, http.MethodGet, srv.url+"/nix-cache-info", tc.hdr, nil); code != tc.wantInfo {
				t.Errorf("GET /nix-cache-info: %d, want %d", code, tc.wantInfo)
			}
		})
	}
}
