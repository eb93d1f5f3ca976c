package main

import (
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/server/httpcache"
)

// addSyncCommands adds serve, push and pull to root, and transfer to its
// bench command.
func newServeCommand() *cobra.Command {
	var (
		sf            storeFlags
		ops           opsFlags
		o             server.Options
		signKeys      []string
		pushTokenFile string
		readTokenFile string
		decodedSize   sizeValue
		decodedDir    string
		narInfoCache  sizeValue
		treeCache     sizeValue
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the store over gRPC (snix castore, nixcas sync) and HTTP (Nix binary cache)",
		Long: `Serve the store in --data over gRPC (the snix castore and store services,
also under their tvix names, and nixcas chunk-level sync for "nixcas push"
and "nixcas pull") and over HTTP (the Nix binary-cache protocol at /,
Prometheus metrics at /metrics), until SIGINT or SIGTERM; then calls in
progress get --shutdown-timeout to finish and the store is closed.
/healthz answers while the process serves, /readyz once the store answers.

With --blobs s3://BUCKET/PREFIX?..., the frames are kept in S3-compatible
object storage instead of the data directory (which keeps the index), and
the frames read are kept in a local cache (--blob-cache-dir, at most
--blob-cache-size). While the object storage cannot be reached, reads of
frames not in a cache answer 503 (gRPC: UNAVAILABLE) and chunks wait
unpacked in the index; both recover without a restart.

Chunks are packed into zstd frames as they arrive; --compact-idle runs
"nixcas store compact" in the background once writes pause, throttled to
--compact-duty-cycle. --retention and --max-size run "nixcas path expire"
every --retention-interval; deleted paths' data waits for a garbage
collection. DELETE /<hash>.narinfo (a write: it needs the push token)
deletes a path.

Tokens: with --push-token-file, writes need "Authorization: Bearer <token>"
(gRPC metadata or HTTP header; Nix's netrc password works too); with
--read-token-file, so do reads (the push token opens them too). Writes are
refused when no push token is set and either a read token is set or a
listener is on a non-loopback address, unless --allow-anonymous-writes.

--tls-cert and --tls-key serve both listeners over TLS (the pair is read
again when its files change: a renewal needs no restart). Each HTTP request
and gRPC call is logged on stderr (--log-format, --log-level). --config
FILE reads flag values from a TOML file whose keys are the flag names
(e.g. listen-http = "0.0.0.0:8080", sign-key = ["/etc/nixcas/key.sec"]);
flags on the command line win. The first line on stderr names the
listeners, TLS, the tokens set, who may write and the signing keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.PushToken, err = readToken(pushTokenFile); err != nil {
				return err
			}
			if o.ReadToken, err = readToken(readTokenFile); err != nil {
				return err
			}
			if o.SignKeys, err = loadSignKeys(signKeys); err != nil {
				return err
			}
			if o.Compression != "none" && o.Compression != "zstd" {
				return fmt.Errorf("--compression %q: want none or zstd", o.Compression)
			}
			if err := ops.apply(os.Stderr, &o); err != nil {
				return err
			}
			o.DataDir, o.Meta = sf.data, sf.meta
			o.Pebble = sf.options(o.Pebble, false)
			o.Pebble.Frames.DecodedCacheSize, o.Pebble.Frames.DecodedCacheDir = int64(decodedSize), decodedDir
			if decodedSize == 0 {
				o.Pebble.Frames.DecodedCacheSize = -1
			}
			o.NarInfoCacheSize = int64(min(uint64(narInfoCache), math.MaxInt64))
			if narInfoCache == 0 {
				o.NarInfoCacheSize = -1
			}
			o.TreeCacheSize = int64(min(uint64(treeCache), math.MaxInt64))
			if treeCache == 0 {
				o.TreeCacheSize = -1
			}
			if o.Pebble.Objects, err = sf.blobs.objects(cmd.Context(), sf.data, false); err != nil {
				return err
			}
			srv, err := server.New(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, startupLine(o, srv))
			err = srv.Serve(cmd.Context())
			if err == nil {
				fmt.Fprintln(os.Stderr, "nixcas: stopped")
			}
			return err
		},
	}
	sf.register(cmd)
	sf.registerIndexCache(cmd)
	ops.register(cmd, &o)
	f := cmd.Flags()
	f.StringVar(&o.GRPCAddr, "listen-grpc", "127.0.0.1:9000", "gRPC listen address")
	f.StringVar(&o.HTTPAddr, "listen-http", "127.0.0.1:8080", `HTTP listen address ("" for none)`)
	f.StringArrayVar(&signKeys, "sign-key", nil, "file holding a Nix secret key (name:base64) to sign paths with as they are stored (and older paths when served); repeatable")
	f.StringVar(&o.Compression, "compression", "none", "compression of NARs served over HTTP: none or zstd")
	decodedSize = pebblestore.DefaultDecodedCacheSize
	f.Var(&decodedSize, "decoded-cache-size", "bytes of decoded frames kept on disk for reads, least recently used out first, so that a frame read again is not decompressed again: `SIZE` such as 4G (0: none)")
	f.StringVar(&decodedDir, "decoded-cache-dir", "", "directory of the decoded frames kept for reads (default DATA/decoded)")
	narInfoCache = server.DefaultNarInfoCacheSize
	f.Var(&narInfoCache, "narinfo-cache", "memory for narinfos kept as served, so that serving one again reads nothing from the store: `SIZE` such as 64M (0: none); with --meta, each is served for at most 1 s before the database is read again")
	treeCache = server.DefaultTreeCacheSize
	f.Var(&treeCache, "tree-cache", "memory for the directories and blob indexes of the NARs served over HTTP, kept so that serving a NAR again reads them from memory: `SIZE` such as 256M (0: none)")
	f.IntVar(&o.Priority, "priority", 40, "binary cache priority announced in nix-cache-info")
	f.StringVar(&pushTokenFile, "push-token-file", "", "file holding the bearer token writes need")
	f.StringVar(&readTokenFile, "read-token-file", "", "file holding the bearer token reads need")
	f.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long calls in progress may take to finish on shutdown")

	// Limits on slow, idle and greedy clients (0 or less: see each).
	l, d := &o.Limits, server.DefaultLimits
	f.DurationVar(&l.HTTPHeaderTimeout, "http-header-timeout", d.HTTPHeaderTimeout, "time a client has to send a request's headers")
	f.DurationVar(&l.HTTPIdleTimeout, "http-idle-timeout", d.HTTPIdleTimeout, "close HTTP keep-alive connections idle this long")
	f.DurationVar(&l.HTTPBodyTimeout, "http-body-timeout", d.HTTPBodyTimeout, "cut an upload whose body sends nothing for this long (progress, not total time)")
	f.DurationVar(&l.HTTPWriteTimeout, "http-write-timeout", d.HTTPWriteTimeout, "cut a download the client does not read (64 KiB) for this long")
	f.IntVar(&l.HTTPMaxConns, "http-max-conns", d.HTTPMaxConns, "open HTTP connections at most; beyond, the longest-idle one is closed (or the new one, when none is idle)")
	f.IntVar(&l.MaxUploads, "max-uploads", d.MaxUploads, "NAR uploads in progress at most; beyond, 503 with Retry-After")
	f.IntVar(&l.MaxRenders, "max-renders", d.MaxRenders, "NAR downloads being rendered at most; beyond, 503 with Retry-After")
	f.IntVar(&l.GRPCMaxConns, "grpc-max-conns", d.GRPCMaxConns, "open gRPC connections at most; beyond, new ones are closed")
	f.DurationVar(&l.GRPCIdleTimeout, "grpc-idle-timeout", d.GRPCIdleTimeout, "close gRPC connections without calls for this long")
	f.DurationVar(&l.GRPCHandshakeTimeout, "grpc-handshake-timeout", d.GRPCHandshakeTimeout, "time a new gRPC connection has to complete its HTTP/2 handshake")
	f.IntVar(&l.GRPCMaxStreams, "grpc-max-streams", d.GRPCMaxStreams, "concurrent gRPC calls per connection at most")
	f.IntVar(&l.GRPCMaxRecvMsgSize, "grpc-max-recv-msg", d.GRPCMaxRecvMsgSize, "largest gRPC message received, in bytes")
	f.DurationVar(&l.GRPCKeepaliveMinTime, "grpc-keepalive-min-time", d.GRPCKeepaliveMinTime, "shortest keepalive ping interval allowed to clients; faster pingers are disconnected")
	f.DurationVar(&l.GRPCKeepaliveTime, "grpc-keepalive-time", d.GRPCKeepaliveTime, "ping a gRPC connection silent this long")
	f.DurationVar(&l.GRPCKeepaliveTimeout, "grpc-keepalive-timeout", d.GRPCKeepaliveTimeout, "close a gRPC connection whose ping is not answered within this")
	f.Int64Var(&l.MaxVerifyBytes, "max-verify-bytes", d.MaxVerifyBytes, "chunk bytes one gRPC request may make the server read and hash (PutBlobs, PathInfo put, CalculateNAR)")
	f.Uint64Var(&l.Tree.MaxEntries, "max-tree-entries", castore.DefaultMaxEntries, "entries at most in the expanded tree of a root accepted or rendered")
	f.Uint64Var(&l.Tree.MaxFileBytes, "max-tree-file-bytes", castore.DefaultMaxFileBytes, "file bytes (repeats counted) at most in the expanded tree of a root accepted or rendered")
	f.IntVar(&l.Tree.MaxDepth, "max-tree-depth", castore.MaxDepth, fmt.Sprintf("directory nesting at most in a tree accepted or rendered (NAR uploads too; at most %d)", castore.MaxDepth))
	f.Int64Var(&l.PutDirectoryBytes, "max-put-directory-bytes", d.PutDirectoryBytes, "memory one DirectoryService.Put stream may hold (its directories, until validated); beyond, RESOURCE_EXHAUSTED")
	f.Int64Var(&l.PutDirectoryBytesTotal, "max-put-directory-bytes-total", d.PutDirectoryBytesTotal, "memory all DirectoryService.Put streams together may hold; beyond, RESOURCE_EXHAUSTED")
	f.IntVar(&l.MaxChunkStreams, "grpc-max-chunk-streams", d.MaxChunkStreams, "chunk-stream calls (push and pull) in progress at once, each holding up to about 100 MiB; beyond, pushes wait and pulls get chunks unstreamed")
	f.DurationVar(&l.RenderTimeout, "render-timeout", httpcache.DefaultRenderTimeout, "longest an HTTP NAR response may take, rendering and sending")
	f.DurationVar(&l.GRPCRenderTimeout, "grpc-render-timeout", grpcapi.DefaultRenderTimeout, "longest a render of the gRPC services may take (CalculateNAR, checking a PathInfo's NAR)")

	// Background compaction (see `nixcas store compact`).
	c, dc := &o.Compact, server.DefaultCompactPolicy
	f.DurationVar(&c.Idle, "compact-idle", dc.Idle, "compact in the background once no chunk has been stored for this long (0: never)")
	f.DurationVar(&c.OlderThan, "compact-older-than", dc.OlderThan, "leave hot frames younger than this to a later compaction")
	f.IntVar(&c.FanOut, "compact-fan-out", dc.FanOut, "runs of cold frames a background compaction merges at a time (see store compact --fan-out)")
	f.Float64Var(&c.DutyCycle, "compact-duty-cycle", dc.DutyCycle, "share of the time a background compaction works, pausing the rest (0 or 1: no pauses)")

	// Retention (see `nixcas path expire`).
	f.Var((*ageValue)(&o.Retention.MaxAge), "retention", "delete paths neither uploaded nor downloaded for this long: `DURATION` such as 90d, 2w, 36h (0: keep them)")
	f.Var((*sizeValue)(&o.Retention.MaxSize), "max-size", "delete least recently used paths while the NAR sizes of those left add up to more: `SIZE` such as 500G (0: no limit)")
	f.DurationVar(&o.Retention.Interval, "retention-interval", server.DefaultRetentionInterval, "time between two retention runs")

	// Background garbage collection (see `nixcas gc`).
	g, dg := &o.GC, server.DefaultGCPolicy
	f.DurationVar(&g.Interval, "gc-interval", dg.Interval, "collect garbage in the background, this long after the previous collection ended (0: never)")
	f.DurationVar(&g.Grace, "gc-grace", dg.Grace, "keep what was written or deduplicated against this long before a collection")
	f.Float64Var(&g.RewriteBelow, "gc-rewrite-below", dg.RewriteBelow, "rewrite frames whose live share is below this (0: only delete frames with nothing live)")
	return addConfigFlag(cmd)
}

// readToken returns the token in file (surrounding white space removed),
// or "" when file is "".
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return t, nil
}
