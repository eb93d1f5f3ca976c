package httpcache_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// requestLog counts the requests a server answered, by method, path and
// status.
type requestLog struct {
	mu   sync.Mutex
	seen map[string]int // "METHOD /path STATUS"
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.seen == nil {
			l.seen = map[string]int{}
		}
		l.seen[r.Method+" "+r.URL.Path+" "+http.StatusText(sw.status)]++
	})
}

// count returns how many requests matched: method, a path prefix and a
// status.
func (l *requestLog) count(method, prefix string, status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k, c := range l.seen {
		m, rest, _ := strings.Cut(k, " ")
		p, st, _ := strings.Cut(rest, " ")
		if m == method && strings.HasPrefix(p, prefix) && st == http.StatusText(status) {
			n += c
		}
	}
	return n
}

// paths returns the paths of the requests that matched method and status.
func (l *requestLog) paths(method string, status int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range l.seen {
		m, rest, _ := strings.Cut(k, " ")
		p, st, _ := strings.Cut(rest, " ")
		if m == method && st == http.StatusText(status) {
			out = append(out, p)
		}
	}
	return out
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// restartable is a nixcas binary cache on a fixed loopback address over a
// Pebble store in a fixed directory, which can be stopped and started
// again.
type restartable struct {
	t    *testing.T
	dir  string
	addr string
	log  *requestLog
	ts   *httptest.Server
	cas  *pebblestore.Store
}

func newRestartable(t *testing.T) *restartable {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &restartable{t: t, dir: filepath.Join(t.TempDir(), "data"), addr: addr}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *restartable) url() string { return "http://" + s.addr }

func (s *restartable) start() {
	s.t.Helper()
	cas, err := pebblestore.Open(s.dir, pebblestore.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	h, err := httpcache.New(httpcache.Options{CAS: cas, Index: store.NewIndex(cas, cas)})
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.log = &requestLog{}
	s.ts = &httptest.Server{Listener: ln, Config: &http.Server{Handler: s.log.wrap(h)}}
	s.ts.Start()
	s.cas = cas
}

func (s *restartable) stop() {
	if s.ts != nil {
		s.ts.Close()
		s.cas.Close()
		s.ts, s.cas = nil, nil
	}
}

// TestNixCopyBackUploaded: a machine uploads a closure with each
// compression Nix writes and copies it back with the same Nix cache
// directory, as CI machines do. Its Nix remembers the narinfos it wrote
// and asks for the NARs at the URLs it chose (nar/<filehash>.nar.xz, ...):
// they answer, across a server restart, with bodies Nix decompresses as it
// said. A second upload of the closure plus a path with the same NAR
// under another name puts no NAR again (HEAD finds it).
func TestNixCopyBackUploaded(t *testing.T) {
	src := newNix(t)
	upKey, upPub := src.keyPair("uploader-1")
	ps := testClosure(t)
	twin := &testPath{name: "leaf-twin", tree: ps[0].tree}
	sum := sha256.Sum256([]byte("nixcas test path " + twin.name))
	twin.base = nixbase32.EncodeToString(sum[:20]) + "-" + twin.name
	twin.nar, twin.narHash = ps[0].nar, ps[0].narHash
	srcStore := sourceStore(t, src, append(ps, twin), upKey, upPub)
	want := src.pathInfos(srcStore)
	// A closure of NARs from 120 bytes to 318 KiB (several blocks of
	// every container), without the 3.5 MiB one Nix's brotli takes most
	// of a minute to compress.
	ps = []*testPath{ps[0], ps[1], ps[2], ps[7], ps[9]}
	all := append(append([]*testPath(nil), ps...), twin)
	wantAll := map[string]pathInfo{}
	for _, p := range all {
		wantAll[p.abs()] = want[p.abs()]
	}

	for _, compression := range []string{"xz", "zstd", "bzip2", "br", "none", "gzip", "lz4"} {
		t.Run(compression, func(t *testing.T) {
			n := newNix(t) // one machine: one Nix cache directory throughout
			srv := newRestartable(t)
			to := srv.url() + "?compression=" + compression
			n.run("nix", append([]string{"copy", "--from", srcStore, "--to", to}, paths(ps)...)...)
			narPuts := srv.log.paths(http.MethodPut, http.StatusCreated)
			var uploaded []string
			for _, p := range narPuts {
				if strings.HasPrefix(p, "/nar/") {
					uploaded = append(uploaded, p)
				}
			}
			if len(uploaded) != len(ps) {
				t.Fatalf("first upload put %d NARs, want %d: %v", len(uploaded), len(ps), uploaded)
			}

			// Again, with a path whose NAR is already there.
			n.run("nix", append([]string{"copy", "--from", srcStore, "--to", to}, paths(all)...)...)
			if got := srv.log.count(http.MethodPut, "/"+twin.base[:32]+".narinfo", http.StatusCreated); got != 1 {
				t.Errorf("the twin's narinfo was put %d times, want 1", got)
			}
			// Nix's gzip (libarchive's) writes the time into the gzip
			// header, so the same NAR compressed a second later has
			// another file hash, thus another URL, which Nix puts.
			if compression != "gzip" {
				if got := srv.log.count(http.MethodPut, "/nar/", http.StatusCreated); got != len(ps) {
					t.Errorf("after the second upload: %d NAR PUTs, want %d (none again)", got, len(ps))
				}
				if got := srv.log.count(http.MethodHead, "/nar/", http.StatusOK); got != 1 {
					t.Errorf("%d HEADs of a NAR answered 200 on the second upload, want 1 (the twin's)", got)
				}
			}

			srv.stop()
			srv.start()

			dst := filepath.Join(t.TempDir(), "store")
			_, stderr, err := n.try("nix", append([]string{"copy", "--from", to, "--to", dst,
				"--option", "trusted-public-keys", upPub}, paths(all)...)...)
			if err != nil {
				t.Fatalf("nix copy --from the server with the uploader's Nix cache: %v\n%s", err, stderr)
			}
			comparePaths(t, wantAll, n.pathInfos(dst))
			// Nix fetched the NARs at the URLs it had uploaded them to.
			for _, u := range uploaded {
				if srv.log.count(http.MethodGet, u, http.StatusOK) == 0 {
					t.Errorf("%s was not fetched with 200 after the restart; GETs: %v", u, srv.log.paths(http.MethodGet, http.StatusOK))
				}
			}
			if got := srv.log.count(http.MethodGet, "/nar/", http.StatusOK); got != len(all) {
				t.Errorf("%d NAR GETs answered 200, want %d (the twin's is its leaf's)", got, len(all))
			}
		})
	}
}

// uploadedDecoders decode a body served under an uploaded name.
var uploadedDecoders = map[string]func(io.Reader) (io.Reader, error){
	"xz": func(r io.Reader) (io.Reader, error) { return xz.NewReader(r) },
	"zstd": func(r io.Reader) (io.Reader, error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	},
	"br":    func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
	"gzip":  func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
	"lz4":   func(r io.Reader) (io.Reader, error) { return lz4.NewReader(r), nil },
	"bzip2": func(r io.Reader) (io.Reader, error) { return bzip2.NewReader(r, nil) },
	"none":  func(r io.Reader) (io.Reader, error) { return r, nil },
}

// cliDecoders decode each format with its own program (installed by
// scripts/test-deps.sh).
var cliDecoders = map[string][]string{
	"xz":    {"xz", "-d", "-c"},
	"zstd":  {"zstd", "-d", "-c"},
	"br":    {"brotli", "-d", "-c"},
	"gzip":  {"gzip", "-d", "-c"},
	"lz4":   {"lz4", "-d", "-c"},
	"bzip2": {"bzip2", "-d", "-c"},
}

// TestUploadedNARFile: a NAR put under any name, then its narinfo naming
// that name and a compression, answers GET, HEAD and ranges under that
// name with a body that decompresses to the NAR; names that were never
// put, or whose narinfo names a compression nixcas cannot serve, are 404.
func TestUploadedNARFile(t *testing.T) {
	ps := testClosure(t)
	p := ps[3] // the largest: several blocks
	srv := serve(t, httpcache.Options{})
	for _, c := range []string{"xz", "zstd", "br", "gzip", "lz4", "bzip2", "none"} {
		t.Run(c, func(t *testing.T) {
			ni := p.narInfo(ps)
			ni.URL = "nar/uploaded-as-" + c + ".nar.x"
			ni.Compression = c
			ni.FileHash, ni.FileSize = nil, 0
			if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+ni.URL, nil, p.nar); code != http.StatusCreated {
				t.Fatalf("PUT %s: %d %s", ni.URL, code, body)
			}
			if code, body, _ := fetch(t, http.MethodPut, srv.url+"/"+p.base[:32]+".narinfo", nil, []byte(ni.String())); code != http.StatusCreated {
				t.Fatalf("PUT narinfo: %d %s", code, body)
			}
			code, whole, hdr := fetch(t, http.MethodGet, srv.url+"/"+ni.URL, nil, nil)
			if code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", ni.URL, code, whole)
			}
			r, err := uploadedDecoders[c](strings.NewReader(whole))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, p.nar) {
				t.Fatalf("GET %s decompressed to %d bytes (want the NAR, %d), error %v", ni.URL, len(got), len(p.nar), err)
			}
			if tool := cliDecoders[c]; tool != nil {
				cmd := exec.CommandContext(t.Context(), tool[0], tool[1:]...)
				cmd.Stdin = strings.NewReader(whole)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				got, err := cmd.Output()
				if err != nil || !bytes.Equal(got, p.nar) || stderr.Len() > 0 {
					t.Fatalf("%s of GET %s: %d bytes (want the NAR, %d), error %v, stderr %q", tool[0], ni.URL, len(got), len(p.nar), err, stderr.String())
				}
			}
			hcode, _, hhdr := fetch(t, http.MethodHead, srv.url+"/"+ni.URL, nil, nil)
			if hcode != http.StatusOK || hhdr.Get("Content-Length") != hdr.Get("Content-Length") {
				t.Errorf("HEAD: %d, Content-Length %q; GET had %q", hcode, hhdr.Get("Content-Length"), hdr.Get("Content-Length"))
			}
			if c == "bzip2" {
				if hdr.Get("Content-Length") != "" {
					t.Errorf("bzip2 with a Content-Length %q", hdr.Get("Content-Length"))
				}
				return
			}
			if hdr.Get("Content-Length") != strconv.Itoa(len(whole)) {
				t.Errorf("Content-Length %q, body of %d bytes", hdr.Get("Content-Length"), len(whole))
			}
			for _, rg := range [][2]int{{0, 1}, {0, 10}, {len(whole) - 7, len(whole)}, {len(whole) / 3, len(whole)/3 + 70000}} {
				from, to := rg[0], min(rg[1], len(whole))
				if got := get206(t, srv.url+"/"+ni.URL, from, to); got != whole[from:to] {
					t.Errorf("range [%d, %d): %d bytes, not the slice of the whole body", from, to, len(got))
				}
			}
		})
	}

	for _, url := range []string{"nar/never-put.nar.xz", "nar/" + p.narHash + ".nar.xz", "nar/uploaded-as-xz.nar"} {
		if code, body, _ := fetch(t, http.MethodGet, srv.url+"/"+url, nil, nil); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", url, code, body)
		}
	}
}
