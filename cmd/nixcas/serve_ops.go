package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/server"
)

// opsFlags are serve's operational flags: logs and TLS.
type opsFlags struct {
	logFormat, logLevel string
	tlsCert, tlsKey     string
}

func (f *opsFlags) register(cmd *cobra.Command, o *server.Options) {
	fl := cmd.Flags()
	fl.BoolVar(&o.AllowAnonymousWrites, "allow-anonymous-writes", false, "accept writes without a push token on a non-loopback address")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve both listeners over TLS (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file of --tls-cert")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "least level logged: debug, info (access log), warn or error")
}

// apply sets the logger (also as slog's default) and TLS of o.
func (f *opsFlags) apply(w io.Writer, o *server.Options) error {
	log, err := newLogger(w, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	o.Logger = log
	o.TLS, err = loadTLS(f.tlsCert, f.tlsKey)
	return err
}

// newLogger returns the logger of --log-format and --log-level, writing to w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// loadTLS returns the TLS configuration of --tls-cert and --tls-key, or
// nil when neither is set. The pair is read again when its files change
// (see certFiles).
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together (have cert %q, key %q)", certFile, keyFile)
	}
	files, err := loadCertFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{GetCertificate: files.GetCertificate, MinVersion: tls.VersionTLS12}, nil
}

// startupLine says what srv serves: the listeners (and whether they are
// TLS), the tokens, who may write, and the names of the signing keys.
func startupLine(o server.Options, srv *server.Server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nixcas: serving %s: gRPC on %s", o.DataDir, srv.GRPCAddr())
	if a := srv.HTTPAddr(); a != nil {
		fmt.Fprintf(&b, ", HTTP on %s", a)
	}
	if srv.TLS() {
		b.WriteString(" (TLS)")
	} else {
		b.WriteString(" (no TLS)")
	}
	p := srv.Auth()
	set := func(tok string) string {
		if tok == "" {
			return "none"
		}
		return "set"
	}
	fmt.Fprintf(&b, "; push token: %s, read token: %s; writes: ", set(p.PushToken), set(p.ReadToken))
	switch {
	case p.PushToken != "":
		b.WriteString("need the push token")
	case p.ReadToken != "":
		b.WriteString("refused (a read token and no push token)")
	case p.RefuseAnonymousWrites:
		b.WriteString("refused (non-loopback listener and no push token; --allow-anonymous-writes allows them)")
	case o.AllowAnonymousWrites:
		b.WriteString("open to anyone (--allow-anonymous-writes)")
	default:
		b.WriteString("open to anyone (loopback only)")
	}
	b.WriteString("; signing keys: ")
	if len(o.SignKeys) == 0 {
		b.WriteString("none")
	}
	for i, k := range o.SignKeys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k.ToPublicKey().Name)
	}
	return b.String()
}
