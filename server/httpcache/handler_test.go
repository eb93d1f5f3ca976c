package httpcache_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server/httpcache"
)

// TestNixCopy: real Nix uploads a closure with every compression, then
// copies it back with signature checking, and the NAR hashes agree; the
// uploader's signatures and the server's are both served, a server key
// the client does not trust is refused, and two keys can be served at
// once.
func TestNixCopy(t *testing.T) {
	n := newNix(t)
	upKey, upPub := n.keyPair("uploader-1")
	srvKey, srvPub := n.keyPair("nixcas-1")
	nextKey, nextPub := n.keyPair("nixcas-2")
	ps := testClosure(t)
	src := sourceStore(t, n, ps, upKey, upPub)

	const token = "push-secret"
	srv := serve(t, httpcache.Options{SignKeys: []signature.SecretKey{srvKey}, PushToken: token})
	rc := netrc(t, token)

	// Upload in groups, each with a compression; the last groups' closures
	// include paths already uploaded, which Nix skips.
	groups := []struct {
		compression string
		paths       []int
	}{
		{"xz", []int{0, 1, 2}},
		{"zstd", []int{3, 4}},
		{"bzip2", []int{5}},
		{"br", []int{6}},
		{"none", []int{7, 8, 10}},
	}
	for _, g := range groups {
		args := []string{"copy", "--from", src, "--to", srv.url + "?compression=" + g.compression, "--option", "netrc-file", rc}
		for _, i := range g.paths {
			args = append(args, ps[i].abs())
		}
		n.run("nix", args...)
	}
	want := n.pathInfos(src)
	if len(want) != len(ps) {
		t.Fatalf("source store has %d paths, want %d", len(want), len(ps))
	}

	// Clients other than the uploader (whose Nix remembers the narinfos it
	// wrote) see what the server serves.
	client := newNix(t)

	// nix path-info on the server shows the uploader's and the server's
	// signatures.
	got := client.pathInfos(srv.url, paths(ps)...)
	for _, p := range ps {
		g := got[p.abs()]
		if g.NarHash != want[p.abs()].NarHash || g.NarSize != want[p.abs()].NarSize {
			t.Errorf("%s on the server: %s, %d bytes; uploaded %s, %d bytes", p.base, g.NarHash, g.NarSize, want[p.abs()].NarHash, want[p.abs()].NarSize)
		}
		if !hasSig(g.Signatures, "uploader-1:") || !hasSig(g.Signatures, "nixcas-1:") {
			t.Errorf("%s on the server: signatures %v, want uploader-1 and nixcas-1", p.base, g.Signatures)
		}
	}

	// Copy everything back into a fresh store, trusting only the server's
	// key, and compare.
	copyBack := func(url, trusted string) (map[string]pathInfo, string, error) {
		dst := filepath.Join(t.TempDir(), "store")
		args := append([]string{"copy", "--from", url, "--to", dst, "--option", "trusted-public-keys", trusted}, paths(ps)...)
		c := newNix(t)
		_, stderr, err := c.try("nix", args...)
		if err != nil {
			return nil, stderr, err
		}
		return c.pathInfos(dst), stderr, nil
	}
	fresh, stderr, err := copyBack(srv.url, srvPub)
	if err != nil {
		t.Fatalf("nix copy --from the server: %v\n%s", err, stderr)
	}
	comparePaths(t, want, fresh)

	// The same store behind a server whose key the client does not trust
	// (and without the uploader's): refused. Serving both keys during a
	// rotation satisfies clients that trust either.
	other := serve(t, httpcache.Options{CAS: srv.cas, Index: srv.index, SignKeys: []signature.SecretKey{nextKey}})
	if _, stderr, err := copyBack(other.url, srvPub); err == nil || !strings.Contains(stderr, "lacks a valid signature") {
		t.Errorf("nix copy from a server signing with an untrusted key: %v, want a refusal for the signature; stderr:\n%s", err, stderr)
	}
	both := serve(t, httpcache.Options{CAS: srv.cas, Index: srv.index, SignKeys: []signature.SecretKey{srvKey, nextKey}})
	for _, pub := range []string{srvPub, nextPub} {
		fresh, stderr, err := copyBack(both.url, pub)
		if err != nil {
			t.Fatalf("nix copy from a server with two keys, trusting %s: %v\n%s", pub, err, stderr)
		}
		comparePaths(t, want, fresh)
	}

	// NARs compressed on the fly with zstd, without FileHash and FileSize.
	zst := serve(t, httpcache.Options{CAS: srv.cas, Index: srv.index, SignKeys: []signature.SecretKey{srvKey}, Compression: "zstd"})
	ni := get(t, zst.url+"/"+ps[3].base[:32]+".narinfo", nil)
	if !strings.Contains(ni, "Compression: zstd\n") || !strings.Contains(ni, ".nar.zst\n") || strings.Contains(ni, "FileSize") {
		t.Errorf("zstd narinfo:\n%s", ni)
	}
	fresh, stderr, err = copyBack(zst.url, srvPub)
	if err != nil {
		t.Fatalf("nix copy --from a zstd server: %v\n%s", err, stderr)
	}
	comparePaths(t, want, fresh)
}

func paths(ps []*testPath) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.abs())
	}
	return out
}

func hasSig(sigs []string, prefix string) bool {
	for _, s := range sigs {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// comparePaths checks that got has every path of want with the same NAR
// hash, size and references.
func comparePaths(t *testing.T, want, got map[string]pathInfo) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s missing", p)
		case g.NarHash != w.NarHash || g.NarSize != w.NarSize:
			t.Errorf("%s: %s, %d bytes, want %s, %d bytes", p, g.NarHash, g.NarSize, w.NarHash, w.NarSize)
		case strings.Join(g.References, " ") != strings.Join(w.References, " "):
			t.Errorf("%s: references %v, want %v", p, g.References, w.References)
		}
	}
}

// get fetches url, which must answer 200, with extra request headers.
func get(t *testing.T, url string, hdr http.Header) string {
	t.Helper()
	code, body, _ := fetch(t, http.MethodGet, url, hdr, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	return body
}

func fetch(t *testing.T, method, url string, hdr http.Header, body []byte) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// uploadAll puts ps into srv as Nix would: each NAR, then its narinfo.
func uploadAll(t *testing.T, srv *server, ps []*testPath, hdr http.Header) {
	t.Helper()
	for _, p := range ps {
		ni := p.narInfo(ps)
		if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, hdr, p.nar); code != http.StatusCreated {
			t.Fatalf("PUT %s: %d %s", ni.URL, code, body)
		}
		if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+p.base[:32]+".narinfo", hdr, []byte(ni.String())); code != http.StatusCreated {
			t.Fatalf("PUT %s.narinfo: %d %s", p.base[:32], code, body)
		}
	}
}

// TestRange: single byte ranges of a NAR are exactly those bytes of it.
func TestRange(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	uploadAll(t, srv, ps, nil)
	for _, p := range []*testPath{ps[1], ps[3], ps[0]} {
		url := srv.url + "/nar/" + p.narHash + ".nar"
		full := get(t, url, nil)
		if full != string(p.nar) {
			t.Fatalf("%s: the NAR served differs from the one put", p.base)
		}
		size := len(p.nar)
		code, _, hdr := fetch(t, http.MethodHead, url, nil, nil)
		if code != http.StatusOK || hdr.Get("Content-Length") != fmt.Sprint(size) || !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
			t.Errorf("HEAD %s: %d, headers %v", url, code, hdr)
		}
		for _, tc := range []struct {
			header   string
			from, to int // the slice expected; to == -1: the whole NAR with 200
		}{
			{"bytes=0-0", 0, 1},
			{"bytes=0-99", 0, 100},
			{"bytes=100-", 100, size},
			{fmt.Sprintf("bytes=%d-%d", size/3, 2*size/3), size / 3, 2*size/3 + 1},
			{fmt.Sprintf("bytes=%d-%d", size-1, size+1000), size - 1, size},
			{"bytes=-1", size - 1, size},
			{"bytes=-300", max(0, size-300), size},
			{fmt.Sprintf("bytes=-%d", size+5), 0, size},
			{"bytes=0-9,20-29", 0, -1},
			{"bytes=x-y", 0, -1},
		} {
			code, body, hdr := fetch(t, http.MethodGet, url, http.Header{"Range": {tc.header}}, nil)
			if tc.to == -1 {
				if code != http.StatusOK || body != string(p.nar) {
					t.Errorf("%s Range %s: %d with %d bytes, want the whole NAR", p.base, tc.header, code, len(body))
				}
				continue
			}
			wantRange := fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to-1, size)
			if code != http.StatusPartialContent || body != string(p.nar[tc.from:tc.to]) || hdr.Get("Content-Range") != wantRange {
				t.Errorf("%s Range %s: %d, %d bytes, Content-Range %q; want 206, bytes [%d, %d), %q",
					p.base, tc.header, code, len(body), hdr.Get("Content-Range"), tc.from, tc.to, wantRange)
			}
		}
		code, _, hdr = fetch(t, http.MethodGet, url, http.Header{"Range": {fmt.Sprintf("bytes=%d-", size)}}, nil)
		if code != http.StatusRequestedRangeNotSatisfiable || hdr.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
			t.Errorf("%s range past the end: %d, Content-Range %q", p.base, code, hdr.Get("Content-Range"))
		}
	}
	// Every 1 KiB window of the chunked tree's NAR, starting at odd places.
	p := ps[3]
	url := srv.url + "/nar/" + p.narHash + ".nar"
	for off := 7; off < len(p.nar); off += len(p.nar)/50 + 13 {
		end := min(off+1024, len(p.nar))
		body := get206(t, url, off, end)
		if body != string(p.nar[off:end]) {
			t.Fatalf("bytes [%d, %d) differ", off, end)
		}
	}
}

func get206(t *testing.T, url string, from, to int) string {
	t.Helper()
	code, body, _ := fetch(t, http.MethodGet, url, http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, to-1)}}, nil)
	if code != http.StatusPartialContent {
		t.Fatalf("Range [%d, %d): %d", from, to, code)
	}
	return body
}

// TestCastoreNAR: the stateless nar/snix-castore/<entry> form renders any
// stored tree.
func TestCastoreNAR(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	uploadAll(t, srv, ps, nil)
	for _, p := range []*testPath{ps[0], ps[1], ps[8]} {
		info, err := srv.index.Get(t.Context(), digestOf(t, p))
		if err != nil {
			t.Fatal(err)
		}
		root := info.Root
		root.Name = ""
		b, err := proto.Marshal(castore.EntryToProto(root))
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("%s/nar/snix-castore/%s?narsize=%d", srv.url, base64.RawURLEncoding.EncodeToString(b), len(p.nar))
		if body := get(t, url, nil); body != string(p.nar) {
			t.Errorf("%s: snix-castore NAR differs", p.base)
		}
		if body := get206(t, url, 3, 20); body != string(p.nar[3:20]) {
			t.Errorf("%s: snix-castore range differs", p.base)
		}
		bad := fmt.Sprintf("%s/nar/snix-castore/%s?narsize=%d", srv.url, base64.RawURLEncoding.EncodeToString(b), len(p.nar)+1)
		if code, _, _ := fetch(t, http.MethodGet, bad, nil, nil); code != http.StatusBadRequest {
			t.Errorf("%s: wrong narsize: %d, want 400", p.base, code)
		}
	}
	missing := castore.EntryToProto(castore.Entry{Kind: castore.KindDirectory, Digest: castore.Hash([]byte("no such directory")), Size: 1})
	b, _ := proto.Marshal(missing)
	if code, _, _ := fetch(t, http.MethodGet, srv.url+"/nar/snix-castore/"+base64.RawURLEncoding.EncodeToString(b), nil, nil); code != http.StatusNotFound {
		t.Errorf("tree not stored: %d, want 404", code)
	}
	if code, _, _ := fetch(t, http.MethodGet, srv.url+"/nar/snix-castore/!!!", nil, nil); code != http.StatusBadRequest {
		t.Errorf("malformed entry: %d, want 400", code)
	}
}

// TestListing: <hash>.ls is what `nix store ls --json -R` prints of the
// path, with narOffset pointing at each file's contents.
func TestListing(t *testing.T) {
	n := newNix(t)
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	uploadAll(t, srv, ps, nil)
	for _, p := range ps {
		var ls struct {
			Version int             `json:"version"`
			Root    json.RawMessage `json:"root"`
		}
		body := get(t, srv.url+"/"+p.base[:32]+".ls", nil)
		if err := json.Unmarshal([]byte(body), &ls); err != nil || ls.Version != 1 {
			t.Fatalf("%s.ls: version %d, %v:\n%s", p.base, ls.Version, err, body)
		}
		nixLs := n.run("nix", "store", "ls", "--store", srv.url, "--json", "-R", p.abs())
		if !jsonEqual(t, ls.Root, []byte(nixLs)) {
			t.Errorf("%s.ls root differs from nix store ls:\n%s\n%s", p.base, ls.Root, nixLs)
		}
		checkOffsets(t, p, "", ls.Root)
	}
}

// checkOffsets checks that each file's narOffset and size point at its
// contents in the NAR.
func checkOffsets(t *testing.T, p *testPath, path string, node json.RawMessage) {
	var n struct {
		Type      string                     `json:"type"`
		Size      int                        `json:"size"`
		NarOffset int                        `json:"narOffset"`
		Entries   map[string]json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(node, &n); err != nil {
		t.Fatal(err)
	}
	switch n.Type {
	case "directory":
		for name, e := range n.Entries {
			checkOffsets(t, p, path+"/"+name, e)
		}
	case "regular":
		var size [8]byte
		copy(size[:], p.nar[n.NarOffset-8:n.NarOffset])
		if got := int(uint64(size[0]) | uint64(size[1])<<8 | uint64(size[2])<<16 | uint64(size[3])<<24); got != n.Size {
			t.Errorf("%s%s: narOffset %d is not after its size (%d there, want %d)", p.base, path, n.NarOffset, got, n.Size)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// failingStore fails reads of one chunk.
type failingStore struct {
	*pebblestore.Store
	bad castore.Digest
}

// ChunkFiles finds no chunk in a file: every chunk is read with GetChunk,
// where the failure is (the store keeps the frames it packed decoded, so
// they would be sent from their files).
func (f *failingStore) ChunkFiles() castore.ChunkFiles { return castore.NoChunkFiles{} }

func (f *failingStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	if d == f.bad {
		return nil, fmt.Errorf("%w: chunk %s (injected)", castore.ErrCorrupt, d)
	}
	return f.Store.GetChunk(ctx, d, dst)
}

// TestRenderFailure: a chunk that cannot be read before anything was sent
// gives a 500 without cache headers; later, it cuts the response short so
// the client cannot take it for the whole NAR.
func TestRenderFailure(t *testing.T) {
	ps := testClosure(t)
	srv := serve(t, httpcache.Options{})
	uploadAll(t, srv, ps, nil)
	p := ps[3] // "chunky": files of several chunks
	info, err := srv.index.Get(t.Context(), digestOf(t, p))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := srv.cas.GetDirectory(t.Context(), info.Root.Digest)
	if err != nil {
		t.Fatal(err)
	}
	chunksOf := func(f castore.FileEntry) []castore.ChunkRef {
		c, err := castore.BlobChunks(t.Context(), srv.cas, f.Digest, f.Size)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := chunksOf(dir.Files[0])[0].Digest
	last := chunksOf(dir.Files[len(dir.Files)-1])[0].Digest
	url := "/nar/" + p.narHash + ".nar"

	early := serve(t, httpcache.Options{CAS: &failingStore{srv.cas, first}, Index: srv.index})
	code, _, hdr := fetch(t, http.MethodGet, early.url+url, nil, nil)
	if code != http.StatusInternalServerError || hdr.Get("Cache-Control") != "" || hdr.Get("ETag") != "" {
		t.Errorf("first chunk unreadable: %d, headers %v; want 500 without cache headers", code, hdr)
	}

	late := serve(t, httpcache.Options{CAS: &failingStore{srv.cas, last}, Index: srv.index})
	resp, err := http.Get(late.url + url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= int64(len(p.nar)) {
		t.Errorf("last file's chunk unreadable: %d, read %d of %d bytes, error %v; want a cut-short body", resp.StatusCode, n, len(p.nar), err)
	}
}
