package main

import (
	"bufio"
	"bytes"
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

// blobsPath is a store path of the test and its NAR as Nix dumps it.
type blobsPath struct {
	path string
	nar  []byte
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
		for f := 0; f*(256<<10) < size; f++ {
			b := make([]byte, min(256<<10, size-f*(256<<10)))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), b, 0o644)
		}
		p := grpcNix(t, nixStore, "nix-store", "--add", dir)
		nar, err := blobsDump(nixStore, p)
		if err != nil {
			t.Fatalf("nix-store --dump %s: %v", p, err)
		}
		out = append(out, blobsPath{p, nar})
	}
	return out
}

// blobsDump returns the NAR of path in the chroot Nix store nixStore.
func blobsDump(nixStore, path string) ([]byte, error) {
	return exec.Command("nix-store", "--dump", filepath.Join(nixStore, path)).Output()
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

// blobsGet downloads url; complete reports a 200 whose body was read to
// the end without error.
type blobsGet struct {
	status   int
	body     []byte
	complete bool
	err      error
}

func blobsDownload(url string, pause func()) blobsGet {
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return blobsGet{err: err}
	}
	defer resp.Body.Close()
	g := blobsGet{status: resp.StatusCode}
	if pause != nil && resp.StatusCode == http.StatusOK {
		head := make([]byte, 256<<10)
		n, err := io.ReadFull(resp.Body, head)
		g.body = head[:n]
		if err != nil {
			g.err = err
			return g
		}
		pause()
	}
	rest, err := io.ReadAll(resp.Body)
	g.body = append(g.body, rest...)
	g.err = err
	g.complete = err == nil && resp.StatusCode == http.StatusOK
	return g
}

// TestServeBlobsS3 serves a store whose frames are in MinIO: Nix copies
// paths in and out with signatures checked, the small local frame cache
// evicts, and MinIO stopped for 10 s gives 503s and cut downloads, never
// a wrong or short NAR passed off as complete, then everything serves
// byte for byte again without restarting nixcas.
func TestServeBlobsS3(t *testing.T) {
	e2eRequireNix(t)
	m := testminio.Start(t)
	for _, kv := range m.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
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
	var all []string
	for _, p := range slicesConcat(first, parallel, big) {
		all = append(all, p.path)
	}

	data := filepath.Join(dir, "data")
	srv := startGRPCServe(t, data, "--blobs", m.URL("cache", ""), "--blob-cache-size", "3M", "--sign-key", filepath.Join(keyDir, "sk"))
	base := "http://" + srv.httpAddr
	nix := func(store string, args ...string) string {
		return grpcNix(t, store, append([]string{"nix", "--extra-experimental-features", "nix-command"}, args...)...)
	}
	nix(src, append([]string{"copy", "--to", base + "?compression=none"}, all...)...)
	if _, err := os.Stat(filepath.Join(data, "frames")); err == nil {
		ents, _ := os.ReadDir(filepath.Join(data, "frames"))
		if len(ents) > 0 {
			t.Fatalf("frames were written to the data directory: %d entries", len(ents))
		}
	}
	// Let the packer put the uploaded chunks in S3.
	puts := `nixcas_object_store_requests_total{op="put"}`
	last, deadline := -1.0, time.Now().Add(60*time.Second)
	for {
		n := metric(t, base, puts)
		if n == last && n > 0 || time.Now().After(deadline) {
			break
		}
		last = n
		time.Sleep(1500 * time.Millisecond)
	}
	if n := metric(t, base, puts); n < 30 {
		t.Fatalf("%v frames put in S3 after uploading 36 MiB of random files, want 30 or more", n)
	}

	// Nix copies the first paths out, checking the server's signatures.
	fresh := filepath.Join(dir, "fresh")
	nix(fresh, append([]string{"copy", "--from", base, "--option", "trusted-public-keys", strings.TrimSpace(string(pk))}, first[0].path, first[1].path, first[2].path)...)
	for _, p := range first {
		got, err := blobsDump(fresh, p.path)
		if err != nil || !bytes.Equal(got, p.nar) {
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
		midStream = blobsDownload(bigURL, func() {
			m.Stop()
			close(stopped)
		})
	})
	<-stopped
	outage := time.Now()
	results := make([]blobsGet, len(parallel))
	for i := range parallel {
		wg.Go(func() { results[i] = blobsDownload(urls[i], nil) })
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
	if midStream.complete {
		t.Errorf("the download paused when MinIO stopped completed (%d of %d bytes): the server had every frame already", len(midStream.body), len(big[0].nar))
	} else if bytes.Equal(midStream.body, big[0].nar) {
		t.Error("the cut download has every byte")
	} else if !bytes.HasPrefix(big[0].nar, midStream.body) {
		t.Error("the cut download's bytes are not a prefix of the NAR")
	} else {
		t.Logf("download in progress when MinIO stopped: status %d, cut after %d of %d bytes: %v", midStream.status, len(midStream.body), len(big[0].nar), midStream.err)
	}
	n503 := 0
	for i, g := range results {
		switch {
		case g.status == http.StatusServiceUnavailable:
			n503++
		case g.complete && !bytes.Equal(g.body, parallel[i].nar):
			t.Errorf("%s: a complete %d response with MinIO stopped that differs from the NAR", parallel[i].path, g.status)
		case g.complete:
			t.Logf("%s: served whole with MinIO stopped (its frames were cached)", parallel[i].path)
		default:
			t.Logf("%s: status %d, %d bytes, %v", parallel[i].path, g.status, len(g.body), g.err)
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

	// Back: everything serves byte for byte, Nix copies with signatures
	// checked, and nixcas was not restarted.
	for i, p := range slicesConcat(parallel, big) {
		g := blobsDownload(urls[i], nil)
		if !g.complete || !bytes.Equal(g.body, p.nar) {
			t.Fatalf("%s after MinIO came back: status %d, %d bytes of %d, %v", p.path, g.status, len(g.body), len(p.nar), g.err)
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
	m := testminio.Start(t)
	for _, kv := range m.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
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
