package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/store"
)

// withBenchProxy adds "proxy" to the bench command and returns it.
func newBenchProxyCommand() *cobra.Command {
	var from, to, work string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Bytes the proxy fetches from upstream for a new release, and its NAR throughput",
		Long: `Run a server holding the Go toolchains --from and --to as signed store paths,
and a proxy of it with an empty cache; nix copy --from the proxy --from's
path, then --to's. Reports the bytes the proxy received from the upstream
for --to against its NAR size and its NAR compressed with xz -6 -T0, and
the throughput of GETting --to's NAR from the proxy (warm cache) and from
the server directly, best of 3 each, in the same run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cleanup, err := scratchDir(&work, "nixcas-bench-proxy-")
			if err != nil {
				return err
			}
			defer cleanup()
			return benchProxy(cmd.Context(), from, to, work)
		},
	}
	cmd.Flags().StringVar(&from, "from", "go1.22.0", "Go release copied first")
	cmd.Flags().StringVar(&to, "to", "go1.22.1", "Go release copied second")
	cmd.Flags().StringVar(&work, "work", "", "scratch directory (default: a temporary one, removed after)")
	return cmd
}

// nixEnv runs Nix with its own home and cache under dir and no daemon.
type nixEnv struct{ env []string }

func newNixEnv(dir string) nixEnv {
	return nixEnv{append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "NIX_REMOTE=")}
}

func (n nixEnv) run(ctx context.Context, name string, args ...string) (string, error) {
	if name == "nix" {
		args = append([]string{"--extra-experimental-features", "nix-command"}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = n.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// keyPair makes a signing key with nix-store under dir.
func (n nixEnv) keyPair(ctx context.Context, dir, name string) (signature.SecretKey, string, error) {
	sk, pk := filepath.Join(dir, "secret"), filepath.Join(dir, "public")
	if _, err := n.run(ctx, "nix-store", "--generate-binary-cache-key", name, sk, pk); err != nil {
		return signature.SecretKey{}, "", err
	}
	b, err := os.ReadFile(sk)
	if err != nil {
		return signature.SecretKey{}, "", err
	}
	key, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, "", err
	}
	pub, err := os.ReadFile(pk)
	return key, strings.TrimSpace(string(pub)), err
}

// publishNAR ingests a NAR into c's cache, pushes its tree and records it
// on the server as the store path <hash>-name (hash derived from name),
// signed with key.
func publishNAR(ctx context.Context, c *client.Client, cache castore.Store, name string, nar io.Reader, key signature.SecretKey) (*store.PathInfo, error) {
	res, err := narrender.Ingest(ctx, nar, cache, castore.WriterOptions{})
	if err != nil {
		return nil, err
	}
	if _, err := c.PushTree(ctx, res.Root); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte("nixcas proxy path " + name))
	p := &store.PathInfo{
		Path:      nixbase32.EncodeToString(sum[:20]) + "-" + name,
		Root:      res.Root,
		NARSize:   res.NARSize,
		NARSha256: res.NARSha256,
	}
	p.Root.Name = p.Path
	sig, err := key.Sign(nil, p.Fingerprint())
	if err != nil {
		return nil, err
	}
	p.Signatures = []store.Signature{sig}
	return c.PutPathInfo(ctx, p)
}

// scrapeCounter reads one counter from a Prometheus text endpoint.
func scrapeCounter(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

// getNAR GETs url, checking the body's SHA-256, and returns the bytes read
// and the time taken.
func getNAR(url string, want [sha256.Size]byte) (int64, time.Duration, error) {
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	took := time.Since(start)
	if err != nil {
		return n, took, err
	}
	if [sha256.Size]byte(h.Sum(nil)) != want {
		return n, took, fmt.Errorf("GET %s: NAR hash differs", url)
	}
	return n, took, nil
}

func benchProxy(ctx context.Context, from, to, work string) error {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench proxy: "+format+"\n", args...) }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Everything but the corpus starts empty.
	for _, d := range []string{"upstream", "push-cache", "proxy-cache", "nix", "nix-store", "key"} {
		if err := os.RemoveAll(filepath.Join(work, d)); err != nil {
			return err
		}
	}
	versions := []string{from, to}
	trees := map[string]string{}
	for _, v := range versions {
		logf("fetching %s", v)
		dir, err := bench.GoToolchain(ctx, v, filepath.Join(work, "corpus"))
		if err != nil {
			return err
		}
		trees[v] = dir
	}
	nix := newNixEnv(filepath.Join(work, "nix"))
	if err := os.MkdirAll(filepath.Join(work, "key"), 0o755); err != nil {
		return err
	}
	key, pub, err := nix.keyPair(ctx, filepath.Join(work, "key"), "upstream-1")
	if err != nil {
		return err
	}

	srv, err := server.New(server.Options{DataDir: filepath.Join(work, "upstream"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ctx) }()
	defer func() { cancel(); <-srvDone }()

	pushCache, err := pebblestore.Open(filepath.Join(work, "push-cache"), pebblestore.Options{})
	if err != nil {
		return err
	}
	defer pushCache.Close()
	pusher, err := client.Dial(srv.GRPCAddr().String(), client.Options{Cache: pushCache})
	if err != nil {
		return err
	}
	defer pusher.Close()
	paths := map[string]*store.PathInfo{}
	for _, v := range versions {
		logf("pushing %s", v)
		r := client.DumpReader(trees[v])
		p, err := publishNAR(ctx, pusher, pushCache, v, r, key)
		r.Close()
		if err != nil {
			return err
		}
		paths[v] = p
	}

	px, err := startProxy(ctx, proxyConfig{upstream: srv.GRPCAddr().String(), listen: "127.0.0.1:0",
		cache: filepath.Join(work, "proxy-cache"), compression: "zstd"})
	if err != nil {
		return err
	}
	pxDone := make(chan error, 1)
	go func() { pxDone <- px.Serve(ctx) }()
	defer func() { cancel(); <-pxDone }()
	proxyURL := "http://" + px.Addr().String()
	metrics := proxyURL + "/metrics"

	fetched := map[string]float64{}
	hits := map[string]float64{}
	took := map[string]time.Duration{}
	for _, v := range versions {
		up0, err := scrapeCounter(metrics, "nixcas_proxy_upstream_bytes_total")
		if err != nil {
			return err
		}
		hit0, _ := scrapeCounter(metrics, "nixcas_proxy_cache_hit_bytes_total")
		logf("nix copy --from the proxy %s", v)
		start := time.Now()
		if _, err := nix.run(ctx, "nix", "copy", "--from", proxyURL, "--to", filepath.Join(work, "nix-store"),
			"--option", "trusted-public-keys", pub, paths[v].AbsolutePath()); err != nil {
			return err
		}
		took[v] = time.Since(start)
		up1, err := scrapeCounter(metrics, "nixcas_proxy_upstream_bytes_total")
		if err != nil {
			return err
		}
		hit1, _ := scrapeCounter(metrics, "nixcas_proxy_cache_hit_bytes_total")
		fetched[v], hits[v] = up1-up0, hit1-hit0
		logf("%s: %.0f bytes from upstream, %.0f from the cache, in %v", v, fetched[v], hits[v], took[v].Round(time.Millisecond))
	}

	logf("compressing the NAR of %s with xz -6 -T0", to)
	xzSize, err := xzNARSize(ctx, trees[to])
	if err != nil {
		return err
	}

	p := paths[to]
	narPath := "/nar/" + nixbase32.EncodeToString(p.NARSha256[:]) + ".nar"
	best := map[string]time.Duration{}
	for range 3 {
		for what, base := range map[string]string{"proxy": proxyURL, "serve": "http://" + srv.HTTPAddr().String()} {
			_, d, err := getNAR(base+narPath, p.NARSha256)
			if err != nil {
				return err
			}
			if best[what] == 0 || d < best[what] {
				best[what] = d
			}
		}
	}
	mbps := func(d time.Duration) float64 { return float64(p.NARSize) / d.Seconds() / 1e6 }
	pct := func(n float64, of uint64) string { return fmt.Sprintf("%.1f%%", 100*n/float64(of)) }

	fmt.Printf("nix copy --from a nixcas proxy with an empty cache: %s, then %s (NAR %d bytes; xz -6 -T0: %d bytes).\n\n", from, to, p.NARSize, xzSize)
	fmt.Println("| copy | NAR bytes | from upstream (wire) | of NAR | of NAR.xz | from the cache | time |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, v := range versions {
		ofXZ := ""
		if v == to {
			ofXZ = pct(fetched[v], xzSize)
		}
		fmt.Printf("| %s | %d | %.0f | %s | %s | %.0f | %v |\n", v, paths[v].NARSize, fetched[v], pct(fetched[v], paths[v].NARSize),
			ofXZ, hits[v], took[v].Round(time.Millisecond))
	}
	fmt.Printf("\nGET of the %s NAR, best of 3: proxy (warm cache) %.0f MB/s (%v), nixcas serve %.0f MB/s (%v): %.2fx.\n",
		to, mbps(best["proxy"]), best["proxy"].Round(time.Millisecond), mbps(best["serve"]), best["serve"].Round(time.Millisecond),
		best["serve"].Seconds()/best["proxy"].Seconds())
	return nil
}
