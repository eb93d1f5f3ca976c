package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/server"
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
	)
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Serve the store over gRPC (snix castore, nixcas sync) and HTTP (Nix binary cache)",
		Long: `Serve the store in --data over gRPC (the snix castore and store services,
also under their tvix names, and nixcas chunk-level sync for "nixcas push"
and "nixcas pull") and over HTTP (the Nix binary-cache protocol at /,
Prometheus metrics at /metrics), until SIGINT or SIGTERM; then calls in
progress get --shutdown-timeout to finish and the store is closed.
/healthz answers while the process serves, /readyz once the store answers.

Tokens: with --push-token-file, writes need "Authorization: Bearer <token>"
(gRPC metadata or HTTP header; Nix's netrc password works too); with
--read-token-file, so do reads (the push token opens them too). Writes are
refused when no push token is set and either a read token is set or a
listener is on a non-loopback address, unless --allow-anonymous-writes.

--tls-cert and --tls-key serve both listeners over TLS. Each HTTP request
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
			for _, f := range signKeys {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				k, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
				if err != nil {
					return fmt.Errorf("--sign-key %s: %w", f, err)
				}
				o.SignKeys = append(o.SignKeys, k)
			}
			if o.Compression != "none" && o.Compression != "zstd" {
				return fmt.Errorf("--compression %q: want none or zstd", o.Compression)
			}
			if err := ops.apply(os.Stderr, &o); err != nil {
				return err
			}
			o.DataDir = sf.data
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
	ops.register(cmd, &o)
	f := cmd.Flags()
	f.StringVar(&o.GRPCAddr, "listen-grpc", "127.0.0.1:9000", "gRPC listen address")
	f.StringVar(&o.HTTPAddr, "listen-http", "127.0.0.1:8080", `HTTP listen address ("" for none)`)
	f.StringArrayVar(&signKeys, "sign-key", nil, "file holding a Nix secret key (name:base64) to sign narinfos with; repeatable")
	f.StringVar(&o.Compression, "compression", "none", "compression of NARs served over HTTP: none or zstd")
	f.IntVar(&o.Priority, "priority", 40, "binary cache priority announced in nix-cache-info")
	f.StringVar(&pushTokenFile, "push-token-file", "", "file holding the bearer token writes need")
	f.StringVar(&readTokenFile, "read-token-file", "", "file holding the bearer token reads need")
	f.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long calls in progress may take to finish on shutdown")
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
