package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/internal/testminio"
)

// blobsPath is a store path of the test and its NAR as Nix dumps it,
// kept in a file: the test process holds no NAR in memory (a child's peak
// RSS, which the memory tests of this package measure, counts the test
// process's own).
type blobsPath struct {
	path string
	nar  string // file
	size int64
	sum  [sha256.Size]byte
}

// blobsAddPaths adds n directories of random (incompressible) files,
// size bytes each, to the Nix store nixStore.
func blobsAddPaths(t *testing.T, nixStore, name string, n int, size int) []blobsPath {
	t.Helper()
	var out []blobsPath
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d", name, i))
		os.MkdirAll(dir, 0o755)
		r := rand.New(rand.NewPCG(uint64(len(name)), uint64(i)))
		b := make([]byte, 256<<10)
		for f := 0; f*len(b) < size; f++ {
			part := b[:min(len(b), size-f*len(b))]
			for j := range part {
				part[j] = byte(r.Uint32())
			}
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), part, 0o644)
		}
		p := blobsPath{path: grpcNix(t, nixStore, "nix-store", "--add", dir), nar: dir + ".nar"}
		f, err := os.Create(p.nar)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("nix-store", "--dump", filepath.Join(nixStore, p.path))
		cmd.Stdout = f
		err = cmd.Run()
		f.Close()
		if err != nil {
			t.Fatalf("nix-store --dump %s: %v", p.path, err)
		}
		p.sum, p.size = e2eHashFile(t, p.nar)
		out = append(out, p)
	}
	return out
}

// blobsDumpSum returns the SHA-256 of the NAR of path in the chroot Nix
// store nixStore.
func blobsDumpSum(nixStore, path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	cmd := exec.Command("nix-store", "--dump", filepath.Join(nixStore, path))
	cmd.Stdout = h
	err := cmd.Run()
	h.Sum(sum[:0])
	return sum, err
}

// blobsNARURL returns the URL of path's NAR, from its narinfo.
func blobsNARURL(t *testing.T, base, path string) string {
	t.Helper()
	hash := strings.SplitN(filepath.Base(path), "-", 2)[0]
	resp, err := http.Get(base + "/" + hash + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("narinfo of %s: %s", path, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "URL: "); ok {
			return base + "/" + u
		}
	}
	t.Fatalf("narinfo of %s has no URL", path)
	return ""
}

// blobsGet is a download compared, as it streams, with the NAR it should
// be: complete is a 200 read to its end without error; same, that every
// byte received so far is the NAR's.
type blobsGet struct {
	status   int
	n        int64
	same     bool
	complete bool
	err      error
}

// prefixChecker compares what is written with the bytes of r.
type prefixChecker struct {
	r    io.Reader
	n    int64
	same bool
	buf  []byte
}

func (c *prefixChecker) Write(p []byte) (int, error) {
	if len(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	got, _ := io.ReadFull(c.r, c.buf[:len(p)])
	c.same = c.same && got == len(p) && bytes.Equal(c.buf[:len(p)], p)
	c.n += int64(len(p))
	return len(p), nil
}

// blobsDownload GETs url, comparing the body with want's NAR; pause, when
// set, runs after the first 256 KiB of a 200.
func blobsDownload(url string, want blobsPath, pause func()) blobsGet {
	f, err := os.Open(want.nar)
	if err != nil {
		return blobsGet{err: err}
	}
	defer f.Close()
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return blobsGet{err: err}
	}
	defer resp.Body.Close()
	g := blobsGet{status: resp.StatusCode}
	check := &prefixChecker{r: f, same: true}
	if pause != nil && resp.StatusCode == http.StatusOK {
		_, err := io.CopyN(check, resp.Body, 256<<10)
		if err != nil {
			g.n, g.same, g.err = check.n, check.same, err
			return g
		}
		pause()
	}
	_, err = io.Copy(check, resp.Body)
	g.n, g.same, g.err = check.n, check.same, err
	g.complete = err == nil && resp.StatusCode == http.StatusOK
	return g
}

// TestServeBlobsS3 serves a store whose frames are in MinIO: Nix copies
// paths in and out with signatures checked, the small local frame cache
// evicts, and MinIO stopped for 10 s gives 503s and cut downloads, never
// a wrong or short NAR passed off as complete, then everything serves
// byte for byte again without restarting nixcas. Not parallel: MinIO's
// port is free while it is stopped, and a neighbour could take it first.
func TestServeBlobsS3(t *testing.T) {
	e2eRequireNix(t)
	m := testminio.Start(t)
	dir := t.TempDir()
	keyDir := t.TempDir()
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "blobs-1", filepath.Join(keyDir, "sk"), filepath.Join(keyDir, "pk")).CombinedOutput(); err != nil {
		t.Fatalf("generating a key: %v\n%s", err, out)
	}
	pk, err := os.ReadFile(filepath.Join(keyDir, "pk"))
	if err != nil {
		t.Fatal(err)
	}

	src := filepath.Join(dir, "src")
	first := blobsAddPaths(t, src, "first", 3, 2<<20)
	parallel := blobsAddPaths(t, src, "parallel", 3, 2<<20)
	big := blobsAddPaths(t, src, "big", 1, 24<<20)
	pathsOf := func(ps []blobsPath) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.path)
		}
		return out
	}
	all := pathsOf(slicesConcat(first, parallel, big))

	data := filepath.Join(dir, "data")
	// No frame kept decoded on local disk (the packer would keep those it
	// writes): what is served during the outage must come from the
	// bounded frame cache or the object storage. 1 MiB hot frames: each
	// path's frames are its own, and several outgrow the 3 MiB cache.
	srv := startGRPCServe(t, data, "--blobs", m.URL("cache", ""), "--blob-cache-size", "3M", "--decoded-cache-size", "0", "--hot-frame-size", "1M", "--sign-key", filepath.Join(keyDir, "sk"))
	base := "http://" + srv.httpAddr
	nix := func(store string, args ...string) string {
		return grpcNix(t, store, append([]string{"nix", "--extra-experimental-features", "nix-command"}, args...)...)
	}
	// The paths read before the outage first, the others after: frames
	// hold chunks in upload order, so those read later share at most one
	// frame with those read first.
	nix(src, append([]string{"copy", "--to", base + "?compression=none"}, pathsOf(first)...)...)
	nix(src, append([]string{"copy", "--to", base + "?compression=none"}, pathsOf(slicesConcat(parallel, big))...)...)
	if _, err := os.Stat(filepath.Join(data, "frames")); err == nil {
		ents, _ := os.ReadDir(filepath.Join(data, "frames"))
		if len(ents) > 0 {
			t.Fatalf("frames were written to the data directory: %d entries", len(ents))
		}
	}
	// Let the packer put the uploaded chunks in S3: all but less than a
	// frame (1 MiB) of the 36 MiB of incompressible files.
	putBytes := `nixcas_object_store_bytes_total{op="put"}`
	last, deadline := -1.0, time.Now().Add(2*time.Minute)
	for {
		n := metric(t, base, putBytes)
		if n == last && n >= 35<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v bytes put in S3 after uploading 36 MiB of random files, want 35 MiB or more", n)
		}
		last = n
		time.Sleep(1500 * time.Millisecond)
	}

	if code, body := httpDo(t, http.DefaultClient, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz with MinIO up: %d %q", code, body)
	}

	// Nix copies the first paths out, checking the server's signatures.
	fresh := filepath.Join(dir, "fresh")
	nix(fresh, append([]string{"copy", "--from", base, "--option", "trusted-public-keys", strings.TrimSpace(string(pk))}, first[0].path, first[1].path, first[2].path)...)
	for _, p := range first {
		if got, err := blobsDumpSum(fresh, p.path); err != nil || got != p.sum {
			t.Fatalf("%s copied out differs from the original (%v)", p.path, err)
		}
	}
	gets := metric(t, base, `nixcas_object_store_requests_total{op="get"}`)
	evictions := metric(t, base, "nixcas_object_cache_evictions_total")
	cacheBytes := metric(t, base, "nixcas_object_cache_bytes")
	t.Logf("after copying 6 MiB out: %v S3 GETs, %v cache evictions, %v bytes cached", gets, evictions, cacheBytes)
	if gets < 6 || evictions == 0 || cacheBytes > 3<<20 || cacheBytes == 0 {
		t.Errorf("after copying 6 MiB out through a 3 MiB cache: %v S3 GETs, %v evictions, %v bytes cached", gets, evictions, cacheBytes)
	}

	// MinIO goes away for 10 s. Downloads of NARs no cache holds: a
	// 503 before any byte, or a cut connection; never a complete 200
	// that differs from the NAR.
	var urls []string
	for _, p := range slicesConcat(parallel, big) {
		urls = append(urls, blobsNARURL(t, base, p.path))
	}
	bigURL := urls[len(urls)-1]
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	var midStream blobsGet
	// One download starts before the outage and is paused in the middle.
	wg.Go(func() {
		midStream = blobsDownload(bigURL, big[0], func() {
			m.Stop()
			close(stopped)
		})
	})
	<-stopped
	outage := time.Now()
	if code, body := httpDo(t, http.DefaultClient, http.MethodGet, base+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "object storage not ready") {
		t.Errorf("/readyz with MinIO stopped: %d %q, want 503 naming the object storage", code, body)
	}
	results := make([]blobsGet, len(parallel))
	for i := range parallel {
		wg.Go(func() { results[i] = blobsDownload(urls[i], parallel[i], nil) })
	}
	// Nix gives up on the 503 (one attempt) and stores nothing.
	during := filepath.Join(dir, "during")
	cmd := exec.Command("nix", "--extra-experimental-features", "nix-command", "copy", "--store", during,
		"--from", base, "--option", "download-attempts", "1", "--option", "trusted-public-keys", strings.TrimSpace(string(pk)), parallel[0].path)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+during+".cache")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("nix copy --from succeeded with MinIO stopped:\n%s", out)
	} else {
		t.Logf("nix copy --from with MinIO stopped: %v: %s", err, lastLine(string(out)))
	}
	wg.Wait()
	switch {
	case midStream.status != http.StatusOK:
		t.Errorf("the download started before MinIO stopped: status %d, %v", midStream.status, midStream.err)
	case midStream.complete:
		t.Errorf("the download paused when MinIO stopped completed (%d of %d bytes): the server had every frame already", midStream.n, big[0].size)
	case midStream.n >= big[0].size:
		t.Errorf("the cut download has all %d bytes", midStream.n)
	case !midStream.same:
		t.Error("the cut download's bytes are not a prefix of the NAR")
	default:
		t.Logf("download in progress when MinIO stopped: status %d, cut after %d of %d bytes: %v", midStream.status, midStream.n, big[0].size, midStream.err)
	}
	n503 := 0
	for i, g := range results {
		switch {
		case g.status == http.StatusServiceUnavailable:
			n503++
		case g.complete && (!g.same || g.n != parallel[i].size):
			t.Errorf("%s: a complete %d response with MinIO stopped that differs from the NAR", parallel[i].path, g.status)
		case g.complete:
			t.Errorf("%s: served whole with MinIO stopped: its frames were cached", parallel[i].path)
		default:
			t.Logf("%s: status %d, %d bytes, %v", parallel[i].path, g.status, g.n, g.err)
		}
	}
	if n503 == 0 {
		t.Errorf("no 503 among %d downloads with MinIO stopped", len(results))
	}
	if e := metric(t, base, `nixcas_object_store_errors_total{kind="unavailable",op="get"}`); e == 0 {
		t.Error("no unavailable GET errors counted with MinIO stopped")
	}
	time.Sleep(time.Until(outage.Add(10 * time.Second)))
	m.Start()
	if code, body := httpDo(t, http.DefaultClient, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz after MinIO came back: %d %q", code, body)
	}

	// Back: everything serves byte for byte, Nix copies with signatures
	// checked, and nixcas was not restarted.
	for i, p := range slicesConcat(parallel, big) {
		g := blobsDownload(urls[i], p, nil)
		if !g.complete || !g.same || g.n != p.size {
			t.Fatalf("%s after MinIO came back: status %d, %d bytes of %d, same %v, %v", p.path, g.status, g.n, p.size, g.same, g.err)
		}
	}
	after := filepath.Join(dir, "after")
	nix(after, append([]string{"copy", "--from", base, "--option", "trusted-public-keys", strings.TrimSpace(string(pk))}, all...)...)
	if srv.cmd.ProcessState != nil {
		t.Fatal("nixcas serve exited")
	}
}

func slicesConcat(ss ...[]blobsPath) []blobsPath {
	var out []blobsPath
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestBlobsFlags: a store keeps its frames where it was created with them.
func TestBlobsFlags(t *testing.T) {
	t.Parallel()
	m := testminio.Start(t)
	dir := t.TempDir()
	nar := e2eWriteNARFile(t, e2eSampleTree())
	s3data := filepath.Join(dir, "s3")
	url := m.URL("flags", "")
	out := e2eInvocation{Args: []string{"nar", "ingest", "--data", s3data, "--blobs", url, nar}}.mustSucceed(t)
	ing := e2eParseIngest(t, out.Stdout)
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"nar", "render", "--data", s3data, "--root", string(ing.Root)}, "keeps its frames in " + url + ": pass --blobs"},
		{[]string{"nar", "render", "--data", s3data, "--blobs", m.URL("other", ""), "--root", string(ing.Root)}, "not in --blobs"},
		{[]string{"nar", "render", "--data", s3data, "--blobs", "s3://nixcas/x?bogus=1", "--root", string(ing.Root)}, `unknown query key "bogus"`},
		{[]string{"nar", "ingest", "--data", filepath.Join(dir, "new"), "--blobs", "s3://user:pw@nixcas/x", nar}, "credentials in the URL"},
		{[]string{"nar", "ingest", "--data", filepath.Join(dir, "new"), "--meta", "mysql://x/y", nar}, `"mysql://x/y" is not a postgres:// URL`},
	} {
		res := e2eInvocation{Args: tt.args}.run(t)
		if res.Err == nil || !strings.Contains(res.Stderr, tt.says) {
			t.Errorf("nixcas %s: %v, stderr %q; want an error saying %q", strings.Join(tt.args, " "), res.Err, res.Stderr, tt.says)
		}
	}
	e2eInvocation{Args: []string{"nar", "render", "--data", s3data, "--blobs", url, "--root", string(ing.Root)}}.mustSucceed(t)

	// A store with frames in its data directory refuses --blobs.
	local := filepath.Join(dir, "local")
	big := e2eWriteNARFile(t, e2eSampleTree())
	e2eInvocation{Args: []string{"nar", "ingest", "--data", local, big}}.mustSucceed(t)
	e2eInvocation{Args: []string{"store", "compact", "--data", local}}.mustSucceed(t)
	if ents, _ := os.ReadDir(filepath.Join(local, "frames")); len(ents) == 0 {
		t.Fatal("store compact wrote no frames in the data directory")
	}
	res := e2eInvocation{Args: []string{"nar", "ingest", "--data", local, "--blobs", url, big}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "--blobs cannot move them") {
		t.Errorf("--blobs on a store with local frames: %v, stderr %q", res.Err, res.Stderr)
	}
}
