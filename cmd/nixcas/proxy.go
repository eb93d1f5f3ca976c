package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// Both kinds of proxy index look a NAR up by the store path its URL names.
var (
	_ httpcache.PathNARIndex = (*client.RemoteIndex)(nil)
	_ httpcache.PathNARIndex = (*httpcache.PullThrough)(nil)
)

// proxyConfig configures a local substituter proxy.
type proxyConfig struct {
	upstream    string // gRPC address (host:port, grpc://host:port) or binary cache URL (http(s)://...)
	timeout     time.Duration
	signKeys    []signature.SecretKey
	listen      string // HTTP address
	cache       string // chunk cache directory
	cacheSize   int64  // bytes of chunks, 0 for no bound
	tokenFile   string
	compression string // wire compression
	priority    int
	// Pull-through only: retention and garbage collection of the cache.
	retention server.RetentionPolicy
	gc        server.GCPolicy
}

// proxyServer is a running proxy: the binary-cache handler over a
// client.RemoteStore (gRPC upstream) or an httpcache.PullThrough (binary
// cache upstream), with /metrics, on its own listener.
type proxyServer struct {
	ln     net.Listener
	http   *http.Server
	cache  *client.Cache
	client *client.Client // gRPC upstream only
	// maintenance writes access times, expires paths and collects
	// garbage in the cache (pull-through only).
	maintenance *server.Maintenance
}

// upstreamKind tells what an --upstream names: a binary cache URL
// (http:// or https://) or a gRPC server in any form client.ParseEndpoint
// reads (HOST, HOST:PORT, grpc://, grpcs://).
func upstreamKind(upstream string) (ep client.Endpoint, cacheURL string, err error) {
	if strings.HasPrefix(upstream, "http://") || strings.HasPrefix(upstream, "https://") {
		return client.Endpoint{}, upstream, nil
	}
	if ep, err = client.ParseEndpoint(upstream); err != nil {
		return client.Endpoint{}, "", fmt.Errorf("--upstream: %w (or http(s)://... for a binary cache)", err)
	}
	return ep, "", nil
}

// startProxy opens the cache, sets up the upstream and listens; Serve then
// serves until its context ends.
func startProxy(ctx context.Context, pc proxyConfig) (*proxyServer, error) {
	p := &proxyServer{}
	if err := p.start(ctx, pc); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *proxyServer) start(ctx context.Context, pc proxyConfig) error {
	ep, cacheURL, err := upstreamKind(pc.upstream)
	if err != nil {
		return err
	}
	if cacheURL != "" && (pc.cacheSize != 0 || pc.tokenFile != "") {
		return errors.New("--cache-size and --token-file apply to a gRPC upstream only (give an HTTP cache's password in its URL)")
	}
	retains := pc.retention.MaxAge != 0 || pc.retention.MaxSize != 0
	if cacheURL == "" && retains {
		return errors.New("--retention and --max-size apply to a binary cache upstream only (a gRPC upstream's cache is bounded by --cache-size)")
	}
	token, err := readToken(pc.tokenFile)
	if err != nil {
		return err
	}
	note := func(msg string) { fmt.Fprintln(os.Stderr, "nixcas: note:", msg) }
	// A cache that collects its garbage records uses, so that the grace
	// keeps the chunks of a fetch in progress (written before the path
	// that reaches them is recorded).
	opts := client.CacheOptions{Note: note, Pebble: pebblestore.Options{RecordUses: cacheURL != "" && retains}}
	if p.cache, err = client.OpenCache(ctx, pc.cache, opts); err != nil {
		return fmt.Errorf("opening the chunk cache %s: %w", pc.cache, err)
	}
	reg := prometheus.NewRegistry()
	o := httpcache.Options{SignKeys: pc.signKeys, Registerer: reg, Priority: pc.priority}
	if cacheURL != "" {
		src, err := httpcache.OpenSource(cacheURL)
		if err != nil {
			return err
		}
		// NARs being fetched are spooled beside the cache, on its disk
		// (not in a temporary directory that may be memory).
		spool := filepath.Join(p.cache.Dir(), "spool")
		if err := os.MkdirAll(spool, 0o755); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		index := store.NewIndex(p.cache, p.cache)
		// A NAR is spooled only with room for it beyond the cache's own
		// reserve.
		pt, err := httpcache.NewPullThrough(httpcache.PullThroughOptions{
			CAS: p.cache, Index: index, Upstream: src, LookupTimeout: pc.timeout,
			SpoolDir: spool, SpoolRoom: p.cache.Room,
		})
		if err != nil {
			return err
		}
		// Paths retention deletes leave their data to a collection; with
		// none deleted there is nothing to collect.
		gc := pc.gc
		if !retains {
			gc.Interval = 0
		}
		cas, _ := castore.As[*pebblestore.Store](p.cache)
		if p.maintenance, err = server.NewMaintenance(cas, index, pc.retention, gc, slog.Default(), reg); err != nil {
			return err
		}
		o.CAS, o.Index = p.cache, pt
	} else {
		var tlsConfig *tls.Config
		if ep.TLS {
			if tlsConfig, err = client.TLSConfig(""); err != nil {
				return err
			}
		}
		if p.client, err = client.Dial(ep.Addr, client.Options{Token: token, Cache: p.cache, Compression: pc.compression, TLS: tlsConfig}); err != nil {
			return err
		}
		rs, err := client.NewRemoteStore(ctx, p.client, client.ProxyOptions{CacheSize: pc.cacheSize, LookupTimeout: pc.timeout, Registerer: reg})
		if err != nil {
			return err
		}
		o.CAS, o.Index = rs, rs.Index()
	}
	h, err := httpcache.New(o)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", readOnly(h))
	p.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if p.ln, err = net.Listen("tcp", pc.listen); err != nil {
		return fmt.Errorf("proxy: HTTP listener on %s: %w", pc.listen, err)
	}
	return nil
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
	maintained := make(chan struct{})
	mctx, stopMaintenance := context.WithCancel(ctx)
	go func() {
		defer close(maintained)
		p.maintenance.Run(mctx) // none with a gRPC upstream
	}()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p.http.Shutdown(sctx)
		cancel()
	case err = <-errc:
		err = fmt.Errorf("proxy: %w", err)
	}
	stopMaintenance()
	<-maintained
	// After the last request: its reads' access times too.
	p.maintenance.FlushAccess(context.Background())
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}

// close releases what start opened; it is safe on a proxy start left
// half done.
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
	var (
		pc       proxyConfig
		signKeys []string
	)
	cmd := &cobra.Command{
		Use:   "proxy --upstream (HOST[:PORT] | grpc://HOST[:PORT] | grpcs://HOST[:PORT] | http(s)://CACHE) [--listen-http ADDR]",
		Short: "Serve a nixcas server or a binary cache to the local Nix, from a local cache",
		Long: `Serve the Nix binary-cache protocol on --listen-http for the local Nix, from
--upstream, which is either a nixcas server (gRPC: HOST:PORT or
grpc://, grpcs:// for TLS) or any Nix binary cache (http:// or https://).

From a nixcas server: narinfos are the upstream's path infos with their
signatures. NARs are rendered locally from chunks: those in the local chunk
cache (--cache, shared with push and pull) are used as they are, the others
are fetched from the upstream in batches, verified and cached. Chunk calls
the upstream fails transiently are retried with backoff. With --cache-size,
least recently used chunks are deleted beyond that many bytes. Metrics at
/metrics: nixcas_proxy_upstream_bytes_total,
nixcas_proxy_cache_hit_bytes_total.

From a binary cache (pull-through): narinfos are the upstream's, with its
signatures; a NAR is fetched once (any compression Nix writes), checked
against its narinfo, ingested as chunks into --cache with a record of the
path, and served from there afterwards without asking the upstream.
--max-size and --retention bound the cache as serve's do: every
--retention-interval the least recently read paths beyond the size, or
those not read for that long, are deleted, and their data is collected
every --gc-interval (with the chunks push and pull left in a shared
--cache, which no path reaches: give the proxy a cache of its own).

Each narinfo look-up the proxy cannot answer itself asks the upstream once,
within --upstream-timeout; when the upstream is down or too slow the proxy
answers 404 at once, so that Nix goes on to its next substituter (Nix
remembers a 404 for narinfo-cache-negative-ttl, an hour by default).
With --sign-key (repeatable) every narinfo also carries the proxy's own
signature. Uploads are refused (405).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pc.upstream == "" {
				return errors.New("--upstream is required")
			}
			if pc.timeout <= 0 {
				return fmt.Errorf("--upstream-timeout %v: want a positive duration", pc.timeout)
			}
			var err error
			if pc.signKeys, err = loadSignKeys(signKeys); err != nil {
				return err
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
	f.StringVar(&pc.upstream, "upstream", "", "upstream: a nixcas server (host:port or grpc://host:port) or a binary cache (http(s)://...)")
	f.DurationVar(&pc.timeout, "upstream-timeout", client.DefaultLookupTimeout, "bound on each narinfo look-up at the upstream; past it, or when the upstream is down, the proxy answers 404")
	f.StringArrayVar(&signKeys, "sign-key", nil, "file holding a Nix secret key (name:base64) to add a signature to every narinfo with; repeatable")
	f.StringVar(&pc.listen, "listen-http", "127.0.0.1:8081", "HTTP listen address")
	f.StringVar(&pc.cache, "cache", defaultCacheDir(), "local chunk cache directory")
	f.Int64Var(&pc.cacheSize, "cache-size", 0, "bound on the cached chunk bytes, least recently used evicted (0: none; gRPC upstream only)")
	f.StringVar(&pc.tokenFile, "token-file", "", "file holding the bearer token the upstream asks for (gRPC upstream only)")
	f.StringVar(&pc.compression, "wire-compression", "zstd", "compression of the chunks on the wire: zstd (chunk streams; each message on its own with older servers), zstd-messages, or none (gRPC upstream only)")
	f.IntVar(&pc.priority, "priority", httpcache.DefaultPriority, "binary cache priority announced in nix-cache-info")
	f.Var((*ageValue)(&pc.retention.MaxAge), "retention", "delete paths from the cache not read for this long: `DURATION` such as 30d (0: keep them; binary cache upstream only)")
	f.Var((*sizeValue)(&pc.retention.MaxSize), "max-size", "delete least recently read paths from the cache while the NAR sizes of those left add up to more: `SIZE` such as 50G (0: no limit; binary cache upstream only)")
	f.DurationVar(&pc.retention.Interval, "retention-interval", server.DefaultRetentionInterval, "time between two retention runs")
	pc.gc = server.DefaultGCPolicy
	pc.gc.Interval = time.Hour
	f.DurationVar(&pc.gc.Interval, "gc-interval", pc.gc.Interval, "with --retention or --max-size, collect the garbage of the cache in the background, this long after the previous collection ended (0: never)")
	f.DurationVar(&pc.gc.Grace, "gc-grace", pc.gc.Grace, "keep what was written this long before a collection")
	return cmd
}

// loadSignKeys reads Nix secret keys (name:base64, as
// nix-store --generate-binary-cache-key writes them) from files.
func loadSignKeys(files []string) ([]signature.SecretKey, error) {
	var keys []signature.SecretKey
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--sign-key: %w", err)
		}
		k, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("--sign-key %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
