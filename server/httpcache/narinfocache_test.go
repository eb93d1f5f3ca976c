package httpcache_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// cachePath is the store path TestNarInfoCache puts, changes and deletes.
const cachePath = "0c6kzph7l0dcbfmjap64f0czdafn3b7x-cached"

// fileNAR returns the NAR of a single regular file holding contents.
func fileNAR(contents string) []byte {
	var nar []byte
	for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents", contents, ")"} {
		nar = binary.LittleEndian.AppendUint64(nar, uint64(len(tok)))
		nar = append(nar, tok...)
		nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
	}
	return nar
}

// pathOfNAR ingests a file holding contents into s and returns the
// PathInfo of cachePath with it as its contents.
func pathOfNAR(t *testing.T, s castore.Store, contents string) *store.PathInfo {
	t.Helper()
	res, err := narrender.Ingest(t.Context(), bytes.NewReader(fileNAR(contents)), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := res.Root
	root.Name = cachePath
	return &store.PathInfo{Path: cachePath, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
}

// TestNarInfoCache: through the real handler, a narinfo served again
// comes from the cache (a record changed behind the index's back is not
// seen), and every change through the index is seen at once: a re-put
// with a different NAR, a new signature, a delete, a put after the
// delete.
func TestNarInfoCache(t *testing.T) {
	s, index := newStore(t)
	reg := prometheus.NewRegistry()
	srv := serve(t, httpcache.Options{CAS: s, Index: index, NarInfoCacheSize: 1 << 20, Registerer: reg})
	url := srv.url + "/" + cachePath[:32] + ".narinfo"
	ctx := t.Context()
	narHash := func(p *store.PathInfo) string {
		return "NarHash: sha256:" + nixbase32.EncodeToString(p.NARSha256[:]) + "\n"
	}
	wantServed := func(step string, want ...string) {
		t.Helper()
		code, body, hdr := fetch(t, http.MethodGet, url, nil, nil)
		if code != http.StatusOK {
			t.Fatalf("%s: GET %s: %d %s", step, url, code, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: narinfo lacks %q:\n%s", step, w, body)
			}
		}
		if ct := hdr.Get("Content-Type"); ct != "text/x-nix-narinfo" {
			t.Errorf("%s: Content-Type %q", step, ct)
		}
		if cl := hdr.Get("Content-Length"); cl != fmt.Sprint(len(body)) {
			t.Errorf("%s: Content-Length %s for %d bytes", step, cl, len(body))
		}
		code, head, hdr := fetch(t, http.MethodHead, url, nil, nil)
		if code != http.StatusOK || head != "" || hdr.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("%s: HEAD: %d, body %q, Content-Length %s; want 200, none, %d", step, code, head, hdr.Get("Content-Length"), len(body))
		}
	}
	hits := func() float64 {
		return metricValue(t, reg, "nixcas_http_narinfo_cache_hits_total")
	}

	a := pathOfNAR(t, s, "first contents")
	if err := index.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	wantServed("first put", narHash(a))
	before := hits()
	wantServed("served again", narHash(a))
	if got := hits(); got < before+2 { // GET and HEAD
		t.Errorf("cache hits went from %v to %v over a GET and a HEAD of a kept narinfo; want +2", before, got)
	}
	// A record written behind the index's back is not seen while the
	// narinfo is kept: what is served comes from the cache.
	b := pathOfNAR(t, s, "second contents")
	v, err := proto.Marshal(b.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	d := a.Digest()
	if err := s.SetMeta(ctx, castore.MetaRecord{Kind: store.KindPathInfo, Key: d[:], Value: v}); err != nil {
		t.Fatal(err)
	}
	wantServed("changed behind the index", narHash(a))

	// A put with a different NAR, through the index.
	if err := index.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	wantServed("re-put with another NAR", narHash(b))

	// The same NAR with a new signature: both signatures served.
	key, _, err := signature.GenerateKeypair("uploader-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := key.Sign(nil, b.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	signed := *b
	signed.Signatures = []store.Signature{sig}
	if err := index.Put(ctx, &signed); err != nil {
		t.Fatal(err)
	}
	wantServed("re-put with a signature", narHash(b), "Sig: "+sig.String()+"\n")

	// Deleted through the handler: 404 at once, and again after.
	if code, body, _ := fetch(t, http.MethodDelete, url, nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	for range 2 {
		if code, body, _ := fetch(t, http.MethodGet, url, nil, nil); code != http.StatusNotFound {
			t.Errorf("GET after the delete: %d %s; want 404", code, body)
		}
	}
	// Put back after the delete: served again, with its NAR.
	if err := index.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	wantServed("put after the delete", narHash(a))
	if got := metricValue(t, reg, "nixcas_http_narinfo_cache_bytes"); got <= 0 || got > 1<<20 {
		t.Errorf("nixcas_http_narinfo_cache_bytes %v; want some, at most 1 MiB", got)
	}
}

// TestNarInfoCacheConcurrentPuts: while readers GET a narinfo as fast as
// they can, puts alternate between two NARs; once a put has returned,
// every GET begun after it serves that put's NAR (reads begun before
// must not leave the old narinfo in the cache).
func TestNarInfoCacheConcurrentPuts(t *testing.T) {
	s, index := newStore(t)
	srv := serve(t, httpcache.Options{CAS: s, Index: index, NarInfoCacheSize: 1 << 20})
	url := srv.url + "/" + cachePath[:32] + ".narinfo"
	ps := []*store.PathInfo{pathOfNAR(t, s, "contents A"), pathOfNAR(t, s, "contents B")}
	want := make([]string, len(ps))
	for i, p := range ps {
		want[i] = "NarHash: sha256:" + nixbase32.EncodeToString(p.NARSha256[:]) + "\n"
	}
	if err := index.Put(t.Context(), ps[0]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := http.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		})
	}
	for i := 1; i <= 40; i++ {
		if err := index.Put(t.Context(), ps[i%2]); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, body, _ := fetch(t, http.MethodGet, url, nil, nil); !strings.Contains(body, want[i%2]) {
				t.Fatalf("put %d: GET after the put served\n%s\nwant %q", i, body, want[i%2])
			}
		}
	}
	cancel()
	wg.Wait()
}

// TestNarInfoCacheNeedsChanges: a narinfo cache over an index that does
// not report its changes is refused, and so are negative sizes.
func TestNarInfoCacheNeedsChanges(t *testing.T) {
	s, index := newStore(t)
	for _, tc := range []struct {
		name string
		o    httpcache.Options
	}{
		{"index without changes", httpcache.Options{CAS: s, Index: struct{ httpcache.Index }{index}, NarInfoCacheSize: 1 << 20}},
		{"negative size", httpcache.Options{CAS: s, Index: index, NarInfoCacheSize: -1}},
		{"negative TTL", httpcache.Options{CAS: s, Index: index, NarInfoCacheSize: 1 << 20, NarInfoCacheTTL: -1}},
	} {
		if _, err := httpcache.New(tc.o); !errors.Is(err, httpcache.ErrInvalid) {
			t.Errorf("%s: New: %v; want ErrInvalid", tc.name, err)
		}
	}
	if _, err := httpcache.New(httpcache.Options{CAS: s, Index: struct{ httpcache.Index }{index}}); err != nil {
		t.Errorf("no narinfo cache over an index without changes: %v", err)
	}
}

// metricValue returns the value of the counter or gauge called name
// (without labels) gathered from reg, or -1 when it has none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.Metric) == 0 {
			continue
		}
		if m := mf.Metric[0]; m.Counter != nil {
			return m.Counter.GetValue()
		} else if m.Gauge != nil {
			return m.Gauge.GetValue()
		}
	}
	return -1
}

// TestNarInfoRoutes: narinfo requests with the narinfo cache on: 200 for
// GET and HEAD of a stored path (its hash escaped too), 404 for a path
// not stored, a malformed hash or a longer path, 405 for other methods.
func TestNarInfoRoutes(t *testing.T) {
	s, index := newStore(t)
	srv := serve(t, httpcache.Options{CAS: s, Index: index})
	if err := index.Put(t.Context(), pathOfNAR(t, s, "routes")); err != nil {
		t.Fatal(err)
	}
	hash := cachePath[:32]
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/" + hash + ".narinfo", http.StatusOK},
		{http.MethodHead, "/" + hash + ".narinfo", http.StatusOK},
		{http.MethodGet, "/%30" + hash[1:] + ".narinfo", http.StatusOK}, // "0" escaped
		{http.MethodGet, "/" + strings.Repeat("1", 32) + ".narinfo", http.StatusNotFound},
		{http.MethodGet, "/" + strings.Repeat("e", 32) + ".narinfo", http.StatusNotFound}, // 'e' is not nixbase32
		{http.MethodGet, "/" + hash[:31] + ".narinfo", http.StatusNotFound},
		{http.MethodGet, "/" + hash[:15] + "/" + hash[16:] + ".narinfo", http.StatusNotFound},
		{http.MethodGet, "/nar/" + hash + ".narinfo", http.StatusNotFound},
		{http.MethodGet, "/" + hash + ".narinfo/", http.StatusNotFound},
		{http.MethodPost, "/" + hash + ".narinfo", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nix-cache-info", http.StatusOK},
	} {
		code, body, _ := fetch(t, tc.method, srv.url+tc.path, nil, nil)
		if code != tc.want {
			t.Errorf("%s %s: %d %s; want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
}
