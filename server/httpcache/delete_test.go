package httpcache_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// TestDelete: DELETE /<hash>.narinfo needs the push token, answers 204,
// then 404; the path is gone at once for plain GETs and for real Nix
// (path-info and copy), and the other paths stay.
func TestDelete(t *testing.T) {
	n := newNix(t)
	ps := testClosure(t)
	upKey, upPub := n.keyPair("uploader-1")
	src := sourceStore(t, n, ps, upKey, upPub)
	const push, read = "push-token", "read-token"
	srv := serve(t, httpcache.Options{PushToken: push, ReadToken: read})
	pushRC, readRC := netrc(t, push), netrc(t, read)
	n.run("nix", append([]string{"copy", "--from", src, "--to", srv.url, "--option", "netrc-file", pushRC}, paths(ps)...)...)

	// The path deleted is one no other path refers to (the closure's
	// top), so the others still copy whole.
	victim := ps[len(ps)-1]
	for _, p := range ps[:len(ps)-1] {
		if strings.Contains(strings.Join(refsOf(t, srv, p), " "), victim.base) {
			t.Fatalf("%s refers to %s: pick a path nothing refers to", p.base, victim.base)
		}
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	narinfoURL := srv.url + "/" + victim.base[:32] + ".narinfo"
	ni := get(t, narinfoURL, bearer(read))
	narURL := srv.url + "/" + narURLOf(ni)
	if code, _, _ := fetch(t, http.MethodGet, narURL, bearer(read), nil); code != http.StatusOK {
		t.Fatalf("GET %s before the delete: %d", narURL, code)
	}
	for _, tc := range []struct {
		name string
		url  string
		hdr  http.Header
		want int
	}{
		{"no token", narinfoURL, nil, http.StatusUnauthorized},
		{"wrong token", narinfoURL, bearer("nope"), http.StatusForbidden},
		{"read token", narinfoURL, bearer(read), http.StatusForbidden},
		{"malformed hash", srv.url + "/not-a-hash.narinfo", bearer(push), http.StatusNotFound},
		{"not a narinfo", srv.url + "/" + victim.base[:32] + ".ls", bearer(push), http.StatusNotFound},
		{"absent path", srv.url + "/" + strings.Repeat("0", 32) + ".narinfo", bearer(push), http.StatusNotFound},
		{"push token", narinfoURL, bearer(push), http.StatusNoContent},
		{"again", narinfoURL, bearer(push), http.StatusNotFound},
	} {
		if code, body, _ := fetch(t, http.MethodDelete, tc.url, tc.hdr, nil); code != tc.want {
			t.Errorf("DELETE with %s: %d %s; want %d", tc.name, code, body, tc.want)
		}
	}
	for _, u := range []string{narinfoURL, narURL} {
		if code, _, _ := fetch(t, http.MethodGet, u, bearer(read), nil); code != http.StatusNotFound {
			t.Errorf("GET %s after the delete: %d; want 404", u, code)
		}
	}

	// Real Nix, with no narinfo cache of its own from before, finds the
	// path gone and the others there.
	c := newNix(t)
	if out, errOut, err := c.try("nix", "path-info", "--store", srv.url, "--option", "netrc-file", readRC, victim.abs()); err == nil {
		t.Errorf("nix path-info of the deleted path succeeded: %s", out)
	} else if !strings.Contains(errOut, "is not valid") {
		t.Errorf("nix path-info of the deleted path: %v, %s; want 'is not valid'", err, errOut)
	}
	dst := filepath.Join(t.TempDir(), "store")
	if _, errOut, err := c.try("nix", "copy", "--no-check-sigs", "--from", srv.url, "--to", dst, "--option", "substituters", "",
		"--option", "netrc-file", readRC, victim.abs()); err == nil {
		t.Errorf("nix copy --from of the deleted path succeeded")
	} else if !strings.Contains(errOut, victim.abs()) {
		t.Errorf("nix copy of the deleted path: %v, %s; want an error naming it", err, errOut)
	}
	rest := paths(ps[:len(ps)-1])
	c.run("nix", append([]string{"copy", "--no-check-sigs", "--from", srv.url, "--to", dst, "--option", "netrc-file", readRC}, rest...)...)
	if got := c.pathInfos(dst, rest...); len(got) != len(rest) {
		t.Errorf("copied %d paths back; want %d", len(got), len(rest))
	}
}

// refsOf returns the references of p as the server records them.
func refsOf(t *testing.T, srv *server, p *testPath) []string {
	t.Helper()
	info, err := srv.index.Get(t.Context(), digestOf(t, p))
	if err != nil {
		t.Fatal(err)
	}
	return info.References
}

// readOnlyIndex hides the index's Delete, as a view of another server's.
type readOnlyIndex struct{ httpcache.Index }

// TestDeleteUnsupported: an index that cannot delete answers 405.
func TestDeleteUnsupported(t *testing.T) {
	cas, index := newStore(t)
	srv := serve(t, httpcache.Options{CAS: cas, Index: readOnlyIndex{index}})
	code, _, hdr := fetch(t, http.MethodDelete, srv.url+"/"+strings.Repeat("0", 32)+".narinfo", nil, nil)
	if code != http.StatusMethodNotAllowed || hdr.Get("Allow") == "" {
		t.Fatalf("DELETE on a read-only index: %d, Allow %q; want 405 with Allow", code, hdr.Get("Allow"))
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestAccessRecorded: serving a narinfo (GET or HEAD) or a NAR refreshes
// the path's access time; a 404, a nix-cache-info or another path's
// request does not.
func TestAccessRecorded(t *testing.T) {
	ps := testClosure(t)
	p, other := ps[0], ps[1]
	for _, tc := range []struct {
		name    string
		method  string
		url     func(ni string) string
		refresh bool
	}{
		{"narinfo GET", http.MethodGet, func(string) string { return "/" + p.base[:32] + ".narinfo" }, true},
		{"narinfo HEAD", http.MethodHead, func(string) string { return "/" + p.base[:32] + ".narinfo" }, true},
		{"NAR GET", http.MethodGet, func(ni string) string { return "/" + ni }, true},
		{"another path's narinfo", http.MethodGet, func(string) string { return "/" + other.base[:32] + ".narinfo" }, false},
		{"a missing narinfo", http.MethodGet, func(string) string { return "/" + strings.Repeat("1", 32) + ".narinfo" }, false},
		{"nix-cache-info", http.MethodGet, func(string) string { return "/nix-cache-info" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cas, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cas.Close() })
			c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
			index := store.NewIndex(cas, cas, store.WithClock(c.now))
			srv := serve(t, httpcache.Options{CAS: cas, Index: index})
			for _, q := range []*testPath{p, other} {
				ni := q.narInfo(ps)
				if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, nil, q.nar); code != http.StatusCreated {
					t.Fatalf("PUT NAR: %d %s", code, body)
				}
				if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+q.base[:32]+".narinfo", nil, []byte(ni.String())); code != http.StatusCreated {
					t.Fatalf("PUT narinfo: %d %s", code, body)
				}
			}
			put := c.now()
			c.advance(3 * time.Hour)
			served := get(t, srv.url+"/"+p.base[:32]+".narinfo", nil)
			c.advance(3 * time.Hour) // the GET above refreshed; this request must too
			code, _, _ := fetch(t, tc.method, srv.url+tc.url(narURLOf(served)), nil, nil)
			if code >= 500 {
				t.Fatalf("%s: %d", tc.name, code)
			}
			if err := index.FlushAccess(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, ok, err := store.NewIndex(cas, cas).LastAccess(context.Background(), digestOf(t, p))
			if err != nil || !ok {
				t.Fatalf("LastAccess: %v, %v", ok, err)
			}
			want := put.Add(3 * time.Hour)
			if tc.refresh {
				want = c.now()
			}
			if !got.Equal(want) {
				t.Errorf("after %s: last access %v; want %v (put at %v)", tc.name, got, want, put)
			}
		})
	}
}

// narURLOf returns the URL line of a narinfo.
func narURLOf(ni string) string {
	for _, l := range strings.Split(ni, "\n") {
		if u, ok := strings.CutPrefix(l, "URL: "); ok {
			return u
		}
	}
	return ""
}

// TestRetentionKeepsDownloaded: of two paths uploaded together, the one
// whose NAR was downloaded since survives retention by age (fake clock);
// the other goes, and its narinfo 404s at once.
func TestRetentionKeepsDownloaded(t *testing.T) {
	ps := testClosure(t)
	p, other := ps[0], ps[1]
	cas, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cas.Close() })
	c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	index := store.NewIndex(cas, cas, store.WithClock(c.now))
	srv := serve(t, httpcache.Options{CAS: cas, Index: index})
	for _, q := range []*testPath{p, other} {
		ni := q.narInfo(ps)
		if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, nil, q.nar); code != http.StatusCreated {
			t.Fatalf("PUT NAR: %d %s", code, body)
		}
		if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+q.base[:32]+".narinfo", nil, []byte(ni.String())); code != http.StatusCreated {
			t.Fatalf("PUT narinfo: %d %s", code, body)
		}
	}
	day := 24 * time.Hour
	c.advance(60 * day)
	ni := get(t, srv.url+"/"+p.base[:32]+".narinfo", nil)
	get(t, srv.url+"/"+narURLOf(ni), nil)
	c.advance(60 * day)
	res, err := index.Expire(context.Background(), store.Retention{MaxAge: 90 * day})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 1 || res.Deleted[0].Path != other.base {
		t.Fatalf("retention deleted %+v; want %s alone", res.Deleted, other.base)
	}
	for q, want := range map[*testPath]int{p: http.StatusOK, other: http.StatusNotFound} {
		if code, _, _ := fetch(t, http.MethodGet, srv.url+"/"+q.base[:32]+".narinfo", nil, nil); code != want {
			t.Errorf("narinfo of %s after retention: %d; want %d", q.base, code, want)
		}
	}
}
