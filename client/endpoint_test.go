package client_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want client.Endpoint
		err  string
	}{
		{"localhost", client.Endpoint{Addr: "localhost:9000"}, ""},
		{"localhost:9123", client.Endpoint{Addr: "localhost:9123"}, ""},
		{"10.0.0.1", client.Endpoint{Addr: "10.0.0.1:9000"}, ""},
		{"cache.example.org:1", client.Endpoint{Addr: "cache.example.org:1"}, ""},
		{"[::1]:9001", client.Endpoint{Addr: "[::1]:9001"}, ""},
		{"[::1]", client.Endpoint{Addr: "[::1]:9000"}, ""},
		{"::1", client.Endpoint{Addr: "[::1]:9000"}, ""},
		{"grpc://localhost", client.Endpoint{Addr: "localhost:9000"}, ""},
		{"grpc://localhost:9002/", client.Endpoint{Addr: "localhost:9002"}, ""},
		{"GRPC://h:1", client.Endpoint{Addr: "h:1"}, ""},
		{"grpcs://cache.example.org", client.Endpoint{Addr: "cache.example.org:443", TLS: true}, ""},
		{"grpcs://cache.example.org:8443", client.Endpoint{Addr: "cache.example.org:8443", TLS: true}, ""},
		{"grpcs://[2001:db8::1]", client.Endpoint{Addr: "[2001:db8::1]:443", TLS: true}, ""},

		{"", client.Endpoint{}, "empty"},
		{"http://localhost:8080", client.Endpoint{}, "http:// is the Nix binary cache"},
		{"https://cache.example.org", client.Endpoint{}, "https:// is the Nix binary cache"},
		{"ftp://h", client.Endpoint{}, "unknown scheme ftp://"},
		{"grpc://h:9000/path", client.Endpoint{}, "only a host and a port"},
		{"grpc://user@h", client.Endpoint{}, "only a host and a port"},
		{"grpc://h?x=1", client.Endpoint{}, "only a host and a port"},
		{"grpc://", client.Endpoint{}, "no host"},
		{":9000", client.Endpoint{}, "no host"},
		{"h:0", client.Endpoint{}, `port "0"`},
		{"h:65536", client.Endpoint{}, `port "65536"`},
		{"h:http", client.Endpoint{}, `port "http"`},
		{"h:", client.Endpoint{}, `port ""`},
		{"a:b:c", client.Endpoint{}, "too many colons"},
		{"h/x", client.Endpoint{}, "characters a host name cannot have"},
	} {
		got, err := client.ParseEndpoint(tc.in)
		if tc.err != "" {
			if !errors.Is(err, client.ErrAddress) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
				t.Errorf("ParseEndpoint(%q) = %v, %v; want an error naming it and saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseEndpoint(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		// The endpoint's String form reads back the same.
		if again, err := client.ParseEndpoint(got.String()); err != nil || again != got {
			t.Errorf("ParseEndpoint(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

// testCA writes a private CA's certificate to a PEM file and returns it
// with a server certificate it signed for 127.0.0.1.
func testCA(t *testing.T) (caFile string, server tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nixcas test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestDialTLS pushes and pulls a tree over TLS to a server whose
// certificate a private CA signed: trusted with the CA file, refused
// without it.
func TestDialTLS(t *testing.T) {
	caFile, cert := testCA(t)
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "server"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s)}, grpc.Creds(creds))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	ep, err := client.ParseEndpoint("grpcs://" + ln.Addr().String())
	if err != nil || !ep.TLS {
		t.Fatalf("ParseEndpoint: %+v, %v", ep, err)
	}

	tree := testtree.Dir(testtree.Entries{"f": testtree.File(testtree.Random(3, 300<<10)), "l": testtree.Link("f")})
	cache := new(castore.MemoryStore)
	res := ingestNode(t, cache, tree)

	// Without the CA the server's certificate is not trusted.
	system, err := client.TLSConfig("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ep.Addr, client.Options{Cache: cache, TLS: system})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PushTree(t.Context(), res.Root); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("push to a server signed by an unknown CA: %v, want a certificate error", err)
	}
	c.Close()

	withCA, err := client.TLSConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err = client.Dial(ep.Addr, client.Options{Cache: cache, TLS: withCA})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.PushTree(t.Context(), res.Root); err != nil || st.ChunksSent == 0 {
		t.Fatalf("push over TLS: %+v, %v", st, err)
	}
	pullCache := new(castore.MemoryStore)
	pc, err := client.Dial(ep.Addr, client.Options{Cache: pullCache, TLS: withCA})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	out := filepath.Join(t.TempDir(), "out")
	if st, err := pc.Pull(t.Context(), res.Root, out); err != nil || st.ChunksFetched == 0 {
		t.Fatalf("pull over TLS: %+v, %v", st, err)
	}
	got, err := os.ReadFile(filepath.Join(out, "f"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(testtree.Random(3, 300<<10).Open())
	if !bytes.Equal(got, want) {
		t.Error("file pulled over TLS differs")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.pem"): "no such file",
		notPEM:                            "holds no PEM certificate",
	} {
		if _, err := client.TLSConfig(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("TLSConfig(%s): %v, want an error saying %q", file, err, want)
		}
	}
}
