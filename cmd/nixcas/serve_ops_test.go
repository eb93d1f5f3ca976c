package main

// End-to-end tests of serve's operator features: the binary as a
// subprocess, real gRPC and HTTP clients, and real Nix over HTTPS.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testcert"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// firstLine returns the startup line of a running serve.
func (s *grpcServe) firstLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	line, _, _ := strings.Cut(s.stderr.String(), "\n")
	return line
}

// output returns what serve wrote on stderr so far.
func (s *grpcServe) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// loopbackAddr turns an address bound to every interface into its
// loopback address.
func loopbackAddr(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// httpPut PUTs body to url and returns the status.
func httpPut(t *testing.T, url string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// httpDo sends a request with an optional bearer token and returns the
// status and body.
func httpDo(t *testing.T, client *http.Client, method, url, token string) (int, string) {
	t.Helper()
	var body *strings.Reader
	if method == http.MethodPut {
		body = strings.NewReader("dropped listing")
	} else {
		body = strings.NewReader("")
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// TestServeWriteDefaults: who may write, on gRPC (nixcas push) and HTTP
// (a PUT), with the startup line saying so.
func TestServeWriteDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	readTok := filepath.Join(dir, "read")
	os.WriteFile(readTok, []byte("read-secret\n"), 0o600)
	src := filepath.Join(dir, "src")
	testtree.Build(t, src, testtree.Dir(testtree.Entries{"f": testtree.File(testtree.Random(9, 50_000))}))
	everywhere := []string{"--listen-grpc", "0.0.0.0:0", "--listen-http", "0.0.0.0:0"}
	for i, tc := range []struct {
		name     string
		args     []string
		token    string
		wantLine string
		pushOK   bool
		wantPut  int
	}{
		{"read token only", []string{"--read-token-file", readTok}, "read-secret",
			"writes: refused (a read token and no push token)", false, http.StatusForbidden},
		{"non-loopback, no token", everywhere, "",
			"writes: refused (non-loopback listener and no push token; --allow-anonymous-writes allows them)", false, http.StatusForbidden},
		{"non-loopback, anonymous writes allowed", append(everywhere, "--allow-anonymous-writes"), "",
			"writes: open to anyone (--allow-anonymous-writes)", true, http.StatusNoContent},
		{"loopback, no token", nil, "",
			"writes: open to anyone (loopback only)", true, http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startGRPCServe(t, filepath.Join(dir, fmt.Sprint("data", i)), tc.args...)
			if line := srv.firstLine(); !strings.Contains(line, tc.wantLine) {
				t.Errorf("startup line %q lacks %q", line, tc.wantLine)
			}
			args := []string{"push", "--server", loopbackAddr(t, srv.grpcAddr), "--cache", filepath.Join(dir, fmt.Sprint("cache", i)), src}
			if tc.token != "" {
				args = append(args[:1], append([]string{"--token-file", readTok}, args[1:]...)...)
			}
			res := e2eInvocation{Args: args}.run(t)
			if tc.pushOK && res.Err != nil {
				t.Errorf("push: %v\n%s", res.Err, res.Stderr)
			}
			if !tc.pushOK && (res.Err == nil || !strings.Contains(res.Stderr, "PermissionDenied") || !strings.Contains(res.Stderr, "uploads are disabled")) {
				t.Errorf("push: %v, %s; want PermissionDenied, uploads are disabled", res.Err, res.Stderr)
			}
			code, body := httpDo(t, http.DefaultClient, http.MethodPut, "http://"+loopbackAddr(t, srv.httpAddr)+"/x.ls", tc.token)
			if code != tc.wantPut {
				t.Errorf("HTTP PUT: %d %q, want %d", code, body, tc.wantPut)
			}
		})
	}
}

// TestServeConfigFile: flags from a TOML file, the command line winning,
// and the errors of a bad file naming the file and the key.
func TestServeConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	readTok := filepath.Join(dir, "read")
	os.WriteFile(readTok, []byte("read-secret\n"), 0o600)
	keyFile := filepath.Join(dir, "sk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "config-test-1", keyFile, filepath.Join(dir, "pk")).CombinedOutput(); err != nil {
		t.Fatalf("generating a key: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "nixcas.toml")
	os.WriteFile(cfg, fmt.Appendf(nil, `# serve's flags, by name
read-token-file = %q
sign-key = [%q]
priority = 7
log-format = "json"
shutdown-timeout = "5s"
`, readTok, keyFile), 0o600)
	srv := startGRPCServe(t, filepath.Join(dir, "data"), "--config", cfg, "--priority", "9")
	line := srv.firstLine()
	for _, want := range []string{"read token: set", "signing keys: config-test-1", "(no TLS)"} {
		if !strings.Contains(line, want) {
			t.Errorf("startup line %q lacks %q", line, want)
		}
	}
	base := "http://" + srv.httpAddr
	if code, _ := httpDo(t, http.DefaultClient, http.MethodGet, base+"/nix-cache-info", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /nix-cache-info without the read token of the config file: %d, want 401", code)
	}
	code, info := httpDo(t, http.DefaultClient, http.MethodGet, base+"/nix-cache-info", "read-secret")
	if code != http.StatusOK || !strings.Contains(info, "Priority: 9\n") {
		t.Errorf("nix-cache-info: %d %q, want Priority 9 (the command line wins over the file's 7)", code, info)
	}
	srv.stop(t)
	// log-format = "json" from the file: the access log is JSON, the
	// refused request included.
	found := false
	for _, l := range strings.Split(srv.output(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "http" && rec["status"] == float64(401) && rec["path"] == "/nix-cache-info" {
			found = true
		}
	}
	if !found {
		t.Errorf("no JSON access log line of the refused request in:\n%s", srv.output())
	}

	for _, tc := range []struct{ name, file, want string }{
		{"unknown key", `listen = "0.0.0.0:8080"`, `unknown key "listen"`},
		{"config itself", `config = "other.toml"`, `unknown key "config"`},
		{"wrong type", `priority = "high"`, `key "priority": invalid argument "high"`},
		{"list for a single flag", `listen-http = ["a:1", "b:2"]`, `key "listen-http": a list, but --listen-http takes one value`},
		{"table", "[server]\nlisten-http = \"a:1\"", `key "server"`},
		{"syntax", "listen-http = ", "nixcas.toml:1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "nixcas.toml")
			os.WriteFile(bad, []byte(tc.file+"\n"), 0o600)
			res := e2eInvocation{Args: []string{"serve", "--data", filepath.Join(dir, "never"), "--config", bad}}.run(t)
			if res.Err == nil || !strings.Contains(res.Stderr, tc.want) || !strings.Contains(res.Stderr, bad) {
				t.Errorf("serve with %q: %v, %q; want an error naming %s and %s", tc.file, res.Err, res.Stderr, bad, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); err == nil {
		t.Errorf("a serve refusing its config file created its store")
	}
}

// TestServeVersion: version and --version print the binary's own build
// information, and which zstd library compresses frames (cgo or not).
func TestServeVersion(t *testing.T) {
	t.Parallel()
	a := e2eInvocation{Args: []string{"version"}}.mustSucceed(t)
	b := e2eInvocation{Args: []string{"--version"}}.mustSucceed(t)
	if !bytes.Equal(a.Stdout, b.Stdout) {
		t.Errorf("version %q and --version %q differ", a.Stdout, b.Stdout)
	}
	got := string(a.Stdout)
	info, err := exec.Command("go", "version", "-m", e2eBinary).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nixcas ", " go1."}
	if m := regexp.MustCompile(`\tmod\t\S+\t(\S+)`).FindSubmatch(info); m != nil {
		want = append(want, "nixcas "+string(m[1])+" ")
	}
	if m := regexp.MustCompile(`vcs\.revision=(\S+)`).FindSubmatch(info); m != nil {
		want = append(want, "revision "+string(m[1]))
	} else {
		want = append(want, "revision unknown")
	}
	if bytes.Contains(info, []byte("CGO_ENABLED=1")) {
		want = append(want, "frames compressed by the zstd C library")
	} else {
		want = append(want, "frames compressed by the zstd Go library")
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("version %q lacks %q (go version -m says:\n%s)", got, w, info)
		}
	}
}

// TestServeTLS: both listeners over TLS, to a gRPC client, an HTTP client
// and Nix trusting the test CA; Nix without it refuses the server.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certs := testcert.Write(t, dir)
	srv := startGRPCServe(t, filepath.Join(dir, "data"), "--tls-cert", certs.Cert, "--tls-key", certs.Key)
	if line := srv.firstLine(); !strings.Contains(line, "(TLS)") {
		t.Errorf("startup line %q does not say TLS", line)
	}
	// grpcCall makes a gRPC call over a new connection trusting pool.
	grpcCall := func(pool *x509.CertPool) error {
		conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := castore.Hash([]byte("tls"))
		_, err = nixcaspb.NewSyncServiceClient(conn).Missing(ctx, &nixcaspb.MissingRequest{Chunks: [][]byte{d[:]}})
		return err
	}
	if err := grpcCall(certs.Pool); err != nil {
		t.Errorf("gRPC over TLS: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}}
	_, port, _ := net.SplitHostPort(srv.httpAddr)
	base := "https://localhost:" + port
	if code, body := httpDo(t, client, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("HTTPS /readyz: %d %q", code, body)
	}
	if code, body := httpDo(t, client, http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
		t.Errorf("HTTPS /healthz: %d %q", code, body)
	}
	nixPing := func(caFile string) (string, error) {
		home := t.TempDir()
		cmd := exec.CommandContext(t.Context(), "nix", "--extra-experimental-features", "nix-command", "store", "ping",
			"--option", "download-attempts", "1", "--store", base)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"), "NIX_REMOTE=", "NIX_SSL_CERT_FILE="+caFile)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := nixPing(certs.CA); err != nil {
		t.Errorf("nix store ping over HTTPS trusting the test CA: %v\n%s", err, out)
	}
	other := testcert.Write(t, t.TempDir())
	if out, err := nixPing(other.CA); err == nil {
		t.Errorf("nix store ping trusting another CA succeeded:\n%s", out)
	}

	// A renewal: other's pair replaces the files, each renamed into
	// place as a certificate manager does. Handshakes after the next
	// look at the files (at most a second apart) present it, on both
	// listeners, with no restart.
	renewTLSFiles(t, other, certs)
	time.Sleep(tlsCheckEvery + 100*time.Millisecond)
	if out, err := nixPing(other.CA); err != nil {
		t.Errorf("nix store ping over HTTPS trusting the renewed certificate's CA: %v\n%s", err, out)
	}
	if out, err := nixPing(certs.CA); err == nil {
		t.Errorf("nix store ping trusting the first CA after the renewal succeeded:\n%s", out)
	}
	if out := srv.output(); !strings.Contains(out, "TLS certificate reloaded") {
		t.Errorf("the server's log does not tell of the reload:\n%s", out)
	}
	if err := grpcCall(other.Pool); err != nil {
		t.Errorf("gRPC over TLS after the renewal: %v", err)
	}
}

// renewTLSFiles puts from's certificate and key in place of to's files,
// each written beside its place and renamed there.
func renewTLSFiles(t *testing.T, from, to testcert.Files) {
	t.Helper()
	for _, f := range [][2]string{{from.Cert, to.Cert}, {from.Key, to.Key}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1]+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f[1]+".new", f[1]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTLSReloadKeepsWorkingCertificate: files that change but do not
// load (a certificate whose key is not there yet, then an unreadable
// file) leave the certificate in use served; once the pair loads again it
// is served.
func TestTLSReloadKeepsWorkingCertificate(t *testing.T) {
	t.Parallel()
	first := testcert.Write(t, t.TempDir())
	second := testcert.Write(t, t.TempDir())
	cfg, err := loadTLS(first.Cert, first.Key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	// trusted reports whether a handshake trusting pool's CA succeeds.
	trusted := func(pool *x509.CertPool) bool {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if !trusted(first.Pool) || trusted(second.Pool) {
		t.Fatal("before any change: the first certificate is not the one served")
	}
	look := func() { time.Sleep(tlsCheckEvery + 100*time.Millisecond) }

	// Half a renewal: the new certificate, the old key.
	b, err := os.ReadFile(second.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(first.Cert, b, 0o600); err != nil {
		t.Fatal(err)
	}
	look()
	if !trusted(first.Pool) {
		t.Error("certificate and key that do not match: the certificate in use is no longer served")
	}
	// The key file gone for a while.
	if err := os.Rename(first.Key, first.Key+".away"); err != nil {
		t.Fatal(err)
	}
	look()
	if !trusted(first.Pool) {
		t.Error("key file missing: the certificate in use is no longer served")
	}
	// The renewal completed.
	if err := os.Remove(first.Key + ".away"); err != nil {
		t.Fatal(err)
	}
	renewTLSFiles(t, second, first)
	look()
	if !trusted(second.Pool) || trusted(first.Pool) {
		t.Error("once the renewed pair loads, it is not the one served")
	}
}

// TestServeStoreFlags: serve applies the store flags it takes:
// --index-cache sizes the index's block cache (on /metrics), and a
// --min-free larger than the disk's free space refuses to open the store.
func TestServeStoreFlags(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	nar, err := os.ReadFile(diskNAR(t, 3, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args      []string
		wantCache string
	}{
		{nil, "nixcas_index_cache_capacity_bytes 2.68435456e+08"},
		{[]string{"--index-cache", "64M"}, "nixcas_index_cache_capacity_bytes 6.7108864e+07"},
	} {
		srv := startGRPCServe(t, data, tc.args...)
		base := "http://" + srv.httpAddr
		if code := httpPut(t, base+"/nar/"+fmt.Sprint(len(tc.args))+".nar", nar); code != http.StatusCreated {
			t.Errorf("serve %q: PUT of a NAR: %d", tc.args, code)
		}
		_, metrics := httpDo(t, http.DefaultClient, http.MethodGet, base+"/metrics", "")
		for _, m := range []string{tc.wantCache, "nixcas_index_cache_bytes ", "nixcas_index_cache_hits_total ", "nixcas_index_cache_misses_total "} {
			if !strings.Contains(metrics, m) {
				t.Errorf("serve %q: /metrics lacks %q", tc.args, m)
			}
		}
		srv.stop(t)
	}
	res := e2eInvocation{Args: []string{"serve", "--data", data, "--listen-grpc", "127.0.0.1:0", "--listen-http", "", "--min-free", "1P"}, Timeout: time.Minute}.run(t)
	if msg := e2eErrorMessage(res.Stderr); res.Err == nil || !strings.Contains(msg, "not enough free disk space") || !strings.Contains(msg, "+ 1073741824.0 MiB") {
		t.Errorf("serve --min-free 1P: %v, %s; want a refusal naming the lack of space", res.Err, msg)
	}
}
