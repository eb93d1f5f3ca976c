package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/server/httpcache"
)

// proxyConfig configures a local substituter proxy.
type proxyConfig struct {
	upstream    string // gRPC address
	listen      string // HTTP address
	cache       string // chunk cache directory
	cacheSize   int64  // bytes of chunks, 0 for no bound
	tokenFile   string
	compression string // wire compression
	priority    int
}

// proxyServer is a running proxy: the binary-cache handler over a
// client.RemoteStore, with /metrics, on its own listener.
type proxyServer struct {
	ln     net.Listener
	http   *http.Server
	cache  *castore.PebbleStore
	client *client.Client
	store  *client.RemoteStore
}

// startProxy opens the cache, dials the upstream and listens; Serve then
// serves until its context ends.
func startProxy(ctx context.Context, pc proxyConfig) (p *proxyServer, err error) {
	token, err := readToken(pc.tokenFile)
	if err != nil {
		return nil, err
	}
	p = &proxyServer{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.cache, err = castore.OpenPebble(pc.cache, castore.PebbleOptions{}); err != nil {
		return nil, fmt.Errorf("opening the chunk cache %s: %w", pc.cache, err)
	}
	if p.client, err = client.Dial(pc.upstream, client.Options{Token: token, Cache: p.cache, Compression: pc.compression}); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	if p.store, err = client.NewRemoteStore(ctx, p.client, client.ProxyOptions{CacheSize: pc.cacheSize, Registerer: reg}); err != nil {
		return nil, err
	}
	h, err := httpcache.New(httpcache.Options{CAS: p.store, Index: p.store.Index(), Registerer: reg, Priority: pc.priority})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", readOnly(h))
	p.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if p.ln, err = net.Listen("tcp", pc.listen); err != nil {
		return nil, fmt.Errorf("proxy: HTTP listener: %w", err)
	}
	return p, nil
}

// readOnly refuses every method but GET and HEAD with 405.
func readOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the proxy is read-only", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Addr is the address the proxy listens on.
func (p *proxyServer) Addr() net.Addr { return p.ln.Addr() }

// Serve serves until ctx ends, then shuts down and closes everything.
func (p *proxyServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- p.http.Serve(p.ln) }()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p.http.Shutdown(sctx)
		cancel()
	case err = <-errc:
		err = fmt.Errorf("proxy: %w", err)
	}
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}

func (p *proxyServer) close() error {
	if p.ln != nil {
		p.ln.Close()
	}
	if p.client != nil {
		p.client.Close()
	}
	if p.cache != nil {
		return p.cache.Close()
	}
	return nil
}

func newProxyCommand() *cobra.Command {
	var pc proxyConfig
	cmd := &cobra.Command{
		Use:   "proxy --upstream ADDR [--listen-http ADDR]",
		Short: "Serve a nixcas server to the local Nix, fetching only the chunks the local cache lacks",
		Long: `Serve the Nix binary-cache protocol on --listen-http for the local Nix, from
the nixcas server at --upstream (gRPC). Narinfos are the upstream's path
infos, signatures unchanged (Nix checks them against the upstream's key).
NARs are rendered locally from chunks: those in the local chunk cache
(--cache, shared with push and pull) are used as they are, the others are
fetched from the upstream in batches, verified and cached. Calls the
upstream fails transiently are retried with backoff. With --cache-size,
least recently used chunks are deleted beyond that many bytes. Uploads are
refused (405). Metrics at /metrics: nixcas_proxy_upstream_bytes_total,
nixcas_proxy_cache_hit_bytes_total.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pc.upstream == "" {
				return errors.New("--upstream is required")
			}
			p, err := startProxy(cmd.Context(), pc)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "nixcas: proxy of %s (cache %s) on http://%s\n", pc.upstream, pc.cache, p.Addr())
			return p.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&pc.upstream, "upstream", "", "gRPC address of the upstream nixcas server (host:port)")
	f.StringVar(&pc.listen, "listen-http", "127.0.0.1:8081", "HTTP listen address")
	f.StringVar(&pc.cache, "cache", defaultCacheDir(), "local chunk cache directory")
	f.Int64Var(&pc.cacheSize, "cache-size", 0, "bound on the cached chunk bytes, least recently used evicted (0: none)")
	f.StringVar(&pc.tokenFile, "token-file", "", "file holding the bearer token the upstream asks for")
	f.StringVar(&pc.compression, "wire-compression", "zstd", "compression of the chunks on the wire: zstd, or none")
	f.IntVar(&pc.priority, "priority", httpcache.DefaultPriority, "binary cache priority announced in nix-cache-info")
	return cmd
}
