package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Default ports of a server address given without one.
const (
	// DefaultPort is nixcas serve's gRPC port.
	DefaultPort = 9000
	// DefaultTLSPort is the port of grpcs:// addresses: a TLS-terminating
	// proxy in front of the server, as HTTPS.
	DefaultTLSPort = 443
)

// ErrAddress: a server address that is not one of the accepted forms.
var ErrAddress = errors.New("client: bad server address")

// Endpoint is where a server listens, parsed from what a user writes.
type Endpoint struct {
	// Addr is host:port, for dialing.
	Addr string
	// TLS is set for grpcs:// addresses.
	TLS bool
}

// String returns the endpoint in the form ParseEndpoint reads back.
func (e Endpoint) String() string {
	if e.TLS {
		return "grpcs://" + e.Addr
	}
	return "grpc://" + e.Addr
}

// ParseEndpoint parses a server address: HOST, HOST:PORT,
// grpc://HOST[:PORT] (plain text) or grpcs://HOST[:PORT] (TLS). Without a
// port, grpc uses DefaultPort and grpcs DefaultTLSPort. HOST may be a
// name, an IPv4 address, or an IPv6 address (in brackets when a port
// follows). Other schemes are refused: http:// names the binary cache,
// which Nix reads, not the gRPC server.
func ParseEndpoint(s string) (Endpoint, error) {
	bad := func(why string, args ...any) (Endpoint, error) {
		return Endpoint{}, fmt.Errorf("%w %q: %s", ErrAddress, s, fmt.Sprintf(why, args...))
	}
	if s == "" {
		return bad("empty; want HOST, HOST:PORT, grpc://HOST[:PORT] or grpcs://HOST[:PORT]")
	}
	hostport, useTLS := s, false
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "grpc":
		case "grpcs":
			useTLS = true
		case "http", "https":
			return bad("%s:// is the Nix binary cache (for nix copy and substituters); push, pull and proxy speak gRPC: give HOST:PORT, grpc://HOST[:PORT] or grpcs://HOST[:PORT]", scheme)
		default:
			return bad("unknown scheme %s://; want grpc:// or grpcs://", scheme)
		}
		u, err := url.Parse(s)
		if err != nil {
			return bad("%v", err)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return bad("want only a host and a port after %s://", scheme)
		}
		hostport = u.Host
		rest = strings.TrimSuffix(rest, "/")
		if rest != hostport {
			return bad("want only a host and a port after %s://", scheme)
		}
	}
	port := DefaultPort
	if useTLS {
		port = DefaultTLSPort
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("port %q is not a number from 1 to 65535", p)
		}
		host, port = h, n
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	} else if strings.Contains(hostport, ":") && net.ParseIP(hostport) == nil {
		return bad("%v", err)
	}
	switch {
	case host == "":
		return bad("no host")
	case strings.ContainsAny(host, "/?#@ \t"):
		return bad("host %q has characters a host name cannot have", host)
	case strings.Contains(host, ":") && net.ParseIP(host) == nil:
		return bad("host %q is not an IPv6 address", host)
	}
	return Endpoint{Addr: net.JoinHostPort(host, strconv.Itoa(port)), TLS: useTLS}, nil
}

// TLSConfig returns the TLS configuration of grpcs:// connections: the
// system's root certificates, plus those in caFile (PEM) when it is set.
func TLSConfig(caFile string) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA certificates: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA certificates: %s holds no PEM certificate", caFile)
		}
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}
