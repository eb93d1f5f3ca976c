package server_test

// Tests of the gRPC limits with real clients on loopback: grpc-go
// clients, and golang.org/x/net/http2's framer (the one grpc-go frames
// HTTP/2 with) where a client must do what grpc-go refuses to (ping
// faster than every 10 s).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/server"
)

// startLimited runs a server with limits l on loopback.
func startLimited(t *testing.T, l server.Limits) *server.Server {
	t.Helper()
	srv, _ := start(t, server.Options{
		DataDir: filepath.Join(t.TempDir(), "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Limits: l,
	})
	return srv
}

// h2Conn is a raw HTTP/2 client connection to a gRPC server, past the
// preface and the exchange of settings.
type h2Conn struct {
	c        net.Conn
	fr       *http2.Framer
	settings map[http2.SettingID]uint32 // the server's
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second)) // against hangs
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatalf("reading the server's settings: %v", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("server's first frame: %v, want SETTINGS", f)
	}
	sf.ForeachSetting(func(s http2.Setting) error {
		h.settings[s.ID] = s.Val
		return nil
	})
	if err := h.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return h
}

// ping sends n pings every interval and returns the GOAWAY frame the
// server sent, or nil when it answered every ping and sent none.
func (h *h2Conn) ping(t *testing.T, n int, interval time.Duration) *http2.GoAwayFrame {
	t.Helper()
	acks := make(chan error, 1)
	var goAway *http2.GoAwayFrame
	go func() {
		got := 0
		for got < n {
			f, err := h.fr.ReadFrame()
			if err != nil {
				acks <- err
				return
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				if f.IsAck() {
					got++
				}
			case *http2.GoAwayFrame:
				goAway = f
				acks <- nil
				return
			}
		}
		acks <- nil
	}()
	for i := range n {
		if err := h.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server closed the connection; the reader says why
		}
		time.Sleep(interval)
	}
	if err := <-acks; err != nil {
		t.Fatalf("reading the server's answers: %v", err)
	}
	return goAway
}

// TestGRPCKeepaliveEnforcement: a client pinging more often than
// --grpc-keepalive-min-time is sent GOAWAY (ENHANCE_YOUR_CALM,
// "too_many_pings") and cut; one pinging at the permitted pace is not.
func TestGRPCKeepaliveEnforcement(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minTime  time.Duration
		pings    int
		interval time.Duration
		goAway   bool
	}{
		{"10 pings 10 ms apart, min time 1h", time.Hour, 10, 10 * time.Millisecond, true},
		{"5 pings 300 ms apart, min time 100 ms", 100 * time.Millisecond, 5, 300 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startLimited(t, server.Limits{GRPCKeepaliveMinTime: tc.minTime})
			h := dialH2(t, srv.GRPCAddr().String())
			ga := h.ping(t, tc.pings, tc.interval)
			switch {
			case tc.goAway && ga == nil:
				t.Fatal("no GOAWAY after pings faster than the minimum")
			case tc.goAway && (ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings"):
				t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			case !tc.goAway && ga != nil:
				t.Fatalf("GOAWAY %v %q for pings at the permitted pace", ga.ErrCode, ga.DebugData())
			}
			if !tc.goAway {
				return
			}
			// The server closes the connection after its GOAWAY.
			for {
				if _, err := h.fr.ReadFrame(); err != nil {
					if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
						t.Errorf("after GOAWAY: %v, want the connection closed", err)
					}
					break
				}
			}
		})
	}
}

// TestGRPCKeepaliveGRPCClient: a grpc-go client whose keepalive pings
// come every 10 s (the fastest grpc-go allows) against a server that
// permits one a minute is sent GOAWAY after three early pings; its next
// call goes over a new connection. About 40 s.
func TestGRPCKeepaliveGRPCClient(t *testing.T) {
	t.Parallel()
	srv := startLimited(t, server.Limits{GRPCKeepaliveMinTime: time.Minute})
	base := "http://" + srv.HTTPAddr().String()
	conn := grpcClient(t, srv.GRPCAddr().String(), grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true,
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := stat(ctx, conn); status.Code(err) != codes.NotFound {
		t.Fatalf("first call: %v", err)
	}
	// The server counts the GOAWAYs it sends in no metric; the client
	// sees its connection closed: wait for the transport to leave READY.
	state := conn.GetState()
	for state.String() == "READY" {
		if !conn.WaitForStateChange(ctx, state) {
			t.Fatalf("the connection stayed READY: %v", ctx.Err())
		}
		state = conn.GetState()
	}
	t.Logf("connection %v after keepalive pings every 10 s; server: %s", state, scrape(t, base, "nixcas_connections_open"))
	if err := stat(ctx, conn, grpc.WaitForReady(true)); status.Code(err) != codes.NotFound {
		t.Fatalf("call after the GOAWAY: %v", err)
	}
}

// grpcClient returns a grpc-go client of addr that reconnects quickly.
func grpcClient(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 5 * time.Second,
		}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stat asks for a blob the store does not hold: NOT_FOUND means the call
// reached the server.
func stat(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) error {
	_, err := castorepb.NewBlobServiceClient(conn).Stat(ctx, &castorepb.StatBlobRequest{Digest: make([]byte, 32)}, opts...)
	return err
}

// scrape returns the lines of base's /metrics that start with name.
func scrape(t *testing.T, base, name string) string {
	t.Helper()
	var out []string
	for line := range strings.Lines(get(t, base+"/metrics")) {
		if strings.HasPrefix(line, name) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "; ")
}

// openStream opens stream id, a DirectoryService.Put call, sending its
// headers and no message.
func (h *h2Conn) openStream(t *testing.T, id uint32) {
	t.Helper()
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/snix.castore.v1.DirectoryService/Put"},
		{":authority", "nixcas"}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// TestGRPCMaxStreams: with --grpc-max-streams 2 the server announces 2
// concurrent streams and refuses a third one opened regardless
// (RST_STREAM REFUSED_STREAM); a grpc-go client holding two open calls on
// a connection gets a third one through only when one of them ends.
func TestGRPCMaxStreams(t *testing.T) {
	for _, tc := range []struct {
		max     int
		blocked bool // the third call waits
	}{{2, true}, {3, false}} {
		t.Run(strconv.Itoa(tc.max), func(t *testing.T) {
			srv := startLimited(t, server.Limits{GRPCMaxStreams: tc.max})
			addr := srv.GRPCAddr().String()
			h := dialH2(t, addr)
			if got := h.settings[http2.SettingMaxConcurrentStreams]; got != uint32(tc.max) {
				t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", got, tc.max)
			}
			// A client that ignores the setting: streams 1, 3 and 5.
			for _, id := range []uint32{1, 3, 5} {
				h.openStream(t, id)
			}
			if tc.blocked {
				for {
					f, err := h.fr.ReadFrame()
					if err != nil {
						t.Fatalf("waiting for the third stream's refusal: %v", err)
					}
					if rst, ok := f.(*http2.RSTStreamFrame); ok {
						if rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
							t.Errorf("RST_STREAM of stream %d, %v; want stream 5, REFUSED_STREAM", rst.StreamID, rst.ErrCode)
						}
						break
					}
				}
			}
			h.c.Close()
			conn := grpcClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Two DirectoryService.Put streams, open and waiting.
			var held []castorepb.DirectoryService_PutClient
			for range 2 {
				s, err := castorepb.NewDirectoryServiceClient(conn).Put(ctx)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, s)
			}
			// A third call on the connection waits for a slot when the
			// cap is 2 (grpc-go keeps to the server's setting). It cannot
			// succeed while both are held, so a short deadline only
			// bounds the test.
			short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
			err := stat(short, conn)
			cancelShort()
			switch {
			case tc.blocked && status.Code(err) != codes.DeadlineExceeded:
				t.Fatalf("a third call beside two open streams, cap 2: %v, want it held until its deadline", err)
			case !tc.blocked && status.Code(err) != codes.NotFound:
				t.Fatalf("a third call beside two open streams, cap 3: %v", err)
			}
			// One stream ends (an empty Put is refused): the third call
			// goes through.
			if _, err := held[0].CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("empty Put: %v", err)
			}
			if err := stat(ctx, conn); status.Code(err) != codes.NotFound {
				t.Fatalf("a call once a stream ended: %v", err)
			}
			held[1].CloseSend()
		})
	}
}

// TestGRPCMaxConns: with --grpc-max-conns 2, a third client connection is
// closed at once (its calls fail UNAVAILABLE) and counted as refused;
// once one of the first two closes, the third connects.
func TestGRPCMaxConns(t *testing.T) {
	srv := startLimited(t, server.Limits{GRPCMaxConns: 2})
	addr, base := srv.GRPCAddr().String(), "http://"+srv.HTTPAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := grpcClient(t, addr)
	second := grpcClient(t, addr)
	for i, c := range []*grpc.ClientConn{first, second} {
		if err := stat(ctx, c); status.Code(err) != codes.NotFound {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	third := grpcClient(t, addr)
	err := stat(ctx, third) // fails fast: the server closes the connection
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a third connection, cap 2: %v, want UNAVAILABLE", err)
	}
	refused := scrape(t, base, `nixcas_connections_limited_total{listener="grpc",reason="refused"}`)
	open := scrape(t, base, `nixcas_connections_open{listener="grpc"}`)
	t.Logf("third connection: %v; %s; %s", err, refused, open)
	if refused == "" || strings.HasSuffix(refused, " 0") {
		t.Errorf("no refused gRPC connection counted: %q", refused)
	}
	if !strings.HasSuffix(open, " 2") {
		t.Errorf("open gRPC connections: %q, want 2", open)
	}
	first.Close()
	if err := stat(ctx, third, grpc.WaitForReady(true)); status.Code(err) != codes.NotFound {
		t.Fatalf("the third connection once the first closed: %v", err)
	}
}
