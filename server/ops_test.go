package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testcert"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server"
)

// putChunk puts one chunk over gRPC with token (none if "").
func putChunk(ctx context.Context, conn *grpc.ClientConn, token string, data []byte) error {
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	d := castore.Hash(data)
	var enc castore.ChunkEncoder
	stream, err := nixcaspb.NewSyncServiceClient(conn).PutChunks(ctx)
	if err != nil {
		return err
	}
	stream.Send(&nixcaspb.PutChunksRequest{Chunks: []*nixcaspb.Chunk{{Digest: d[:], Data: enc.Encode(nil, data)}}})
	_, err = stream.CloseAndRecv()
	return err
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// loopback returns the loopback address of a listener bound to every
// interface.
func loopback(a net.Addr) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.(*net.TCPAddr).Port))
}

func httpPut(t *testing.T, client *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestWriteDefaults: the safe defaults of who may write, on both
// listeners. PUT /x.ls is an upload the cache accepts and drops (204).
func TestWriteDefaults(t *testing.T) {
	for _, tc := range []struct {
		name      string
		o         server.Options
		token     string
		wantGRPC  codes.Code
		wantHTTP  int
		wantRefus bool
	}{
		{"loopback, no token", server.Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, "", codes.OK, http.StatusNoContent, false},
		{"loopback, read token only", server.Options{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ReadToken: "r"}, "r", codes.PermissionDenied, http.StatusForbidden, true},
		{"all interfaces, no token", server.Options{GRPCAddr: "0.0.0.0:0", HTTPAddr: "0.0.0.0:0"}, "", codes.PermissionDenied, http.StatusForbidden, true},
		{"gRPC on all interfaces refuses on HTTP too", server.Options{GRPCAddr: "0.0.0.0:0", HTTPAddr: "127.0.0.1:0"}, "", codes.PermissionDenied, http.StatusForbidden, true},
		{"all interfaces, anonymous writes allowed", server.Options{GRPCAddr: "0.0.0.0:0", HTTPAddr: "0.0.0.0:0", AllowAnonymousWrites: true}, "", codes.OK, http.StatusNoContent, false},
		{"all interfaces, push token", server.Options{GRPCAddr: "0.0.0.0:0", HTTPAddr: "0.0.0.0:0", PushToken: "p"}, "p", codes.OK, http.StatusNoContent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.DataDir = filepath.Join(t.TempDir(), "data")
			srv, _ := start(t, tc.o)
			if got := srv.Auth().WritesRefused(); got != tc.wantRefus {
				t.Errorf("Auth().WritesRefused() = %v, want %v", got, tc.wantRefus)
			}
			conn := dial(t, loopback(srv.GRPCAddr()), nil)
			err := putChunk(context.Background(), conn, tc.token, []byte("chunk"))
			if status.Code(err) != tc.wantGRPC {
				t.Errorf("gRPC PutChunks: %v, want %v", err, tc.wantGRPC)
			}
			if code := httpPut(t, http.DefaultClient, "http://"+loopback(srv.HTTPAddr())+"/x.ls", tc.token); code != tc.wantHTTP {
				t.Errorf("HTTP PUT: %d, want %d", code, tc.wantHTTP)
			}
		})
	}
	_, err := server.New(server.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", ReadToken: "r", AllowAnonymousWrites: true})
	if err == nil || !strings.Contains(err.Error(), "anonymous writes with a read token") {
		t.Errorf("anonymous writes with a read token only: %v, want an error", err)
	}
}

func TestHealth(t *testing.T) {
	srv, stop := start(t, server.Options{DataDir: filepath.Join(t.TempDir(), "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ReadToken: "r"})
	base := "http://" + srv.HTTPAddr().String()
	// Open whatever the tokens.
	if got := get(t, base+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz: %q", got)
	}
	if got := get(t, base+"/readyz"); got != "ready\n" {
		t.Errorf("/readyz: %q", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Errorf("/healthz answered after shutdown")
	}
}

// logBuffer collects JSON log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// find returns the first record with all of want's values.
func find(recs []map[string]any, want map[string]any) map[string]any {
	for _, r := range recs {
		ok := true
		for k, v := range want {
			if r[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

func TestAccessLog(t *testing.T) {
	var logs logBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	srv, stop := start(t, server.Options{DataDir: filepath.Join(t.TempDir(), "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", PushToken: "p", Logger: log})
	conn := dial(t, srv.GRPCAddr().String(), nil)
	if err := putChunk(context.Background(), conn, "p", []byte("logged chunk")); err != nil {
		t.Fatal(err)
	}
	if err := putChunk(context.Background(), conn, "", []byte("refused")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("put without a token: %v", err)
	}
	base := "http://" + srv.HTTPAddr().String()
	get(t, base+"/nix-cache-info")
	if code := httpPut(t, http.DefaultClient, base+"/x.ls", "wrong"); code != http.StatusForbidden {
		t.Fatalf("PUT with a wrong token: %d", code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs := logs.records(t)
	const put = "/nixcas.v1.SyncService/PutChunks"
	for _, tc := range []struct {
		name string
		want map[string]any
	}{
		{"gRPC call", map[string]any{"msg": "grpc", "method": put, "code": "OK"}},
		{"refused gRPC call", map[string]any{"msg": "grpc", "method": put, "code": "Unauthenticated"}},
		{"HTTP request", map[string]any{"msg": "http", "method": "GET", "path": "/nix-cache-info", "status": float64(200)}},
		{"refused HTTP request", map[string]any{"msg": "http", "method": "PUT", "path": "/x.ls", "status": float64(403)}},
	} {
		r := find(recs, tc.want)
		if r == nil {
			t.Errorf("no log record of the %s %v in:\n%s", tc.name, tc.want, logs.buf.String())
			continue
		}
		if r["level"] != "INFO" {
			t.Errorf("%s logged at %v", tc.name, r["level"])
		}
		for _, k := range []string{"received", "sent", "duration", "remote"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%s record lacks %s: %v", tc.name, k, r)
			}
		}
		if !strings.HasPrefix(r["remote"].(string), "127.0.0.1:") {
			t.Errorf("%s remote %v", tc.name, r["remote"])
		}
	}
	if r := find(recs, map[string]any{"msg": "grpc", "code": "OK"}); r != nil && r["received"].(float64) < float64(len("logged chunk")) {
		t.Errorf("gRPC put logged %v bytes received", r["received"])
	}
	if r := find(recs, map[string]any{"path": "/nix-cache-info"}); r != nil && r["sent"].(float64) < 20 {
		t.Errorf("nix-cache-info logged %v bytes sent", r["sent"])
	}
}

// TestTLS: both listeners speak TLS with the configured certificate, to
// real gRPC and HTTP clients trusting the CA, and refuse plain clients.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	files := testcert.Write(t, dir)
	pool := files.Pool
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := start(t, server.Options{
		DataDir: filepath.Join(dir, "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	})
	if !srv.TLS() {
		t.Errorf("TLS() = false")
	}
	conn := dial(t, srv.GRPCAddr().String(), credentials.NewTLS(&tls.Config{RootCAs: pool}))
	if err := putChunk(context.Background(), conn, "", []byte("over tls")); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	plain := dial(t, srv.GRPCAddr().String(), nil)
	if err := putChunk(ctx, plain, "", []byte("plain")); err == nil {
		t.Errorf("plain gRPC to a TLS listener succeeded")
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := client.Get("https://" + srv.HTTPAddr().String() + "/nix-cache-info")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("HTTPS /nix-cache-info: %s, TLS %v", resp.Status, resp.TLS != nil)
	}
	if resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/nix-cache-info"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the TLS listener: %s", resp.Status)
		}
	}
	if _, err := http.DefaultClient.Get("https://" + srv.HTTPAddr().String() + "/healthz"); err == nil {
		t.Errorf("HTTPS with an untrusted CA succeeded")
	}
}

// TestStoreGauges: /metrics has the store's size and path count.
func TestStoreGauges(t *testing.T) {
	srv, _ := start(t, server.Options{DataDir: filepath.Join(t.TempDir(), "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	conn := dial(t, srv.GRPCAddr().String(), nil)
	if err := putChunk(context.Background(), conn, "", bytes.Repeat([]byte("gauge "), 1000)); err != nil {
		t.Fatal(err)
	}
	body := get(t, "http://"+srv.HTTPAddr().String()+"/metrics")
	for _, want := range []string{"nixcas_store_chunks 1\n", "nixcas_store_unique_chunk_bytes 6000\n", "nixcas_store_paths 0\n", "nixcas_store_stored_bytes "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
