package main

// End-to-end test of stalled NAR downloads: the real binary, clients on
// loopback that read a response's headers and then stop reading.

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// stallNARSize is the file in the stalled downloads' NAR: random, so
// nothing shrinks it, and far more than loopback's socket buffers can
// absorb (the client's receive buffer may grow to net.ipv4.tcp_rmem's
// maximum, 32 MiB on Debian 12, the server's send buffer to
// net.ipv4.tcp_wmem's, 4 MiB), or the render would finish, and free its
// slot, into the buffers of a client that reads nothing.
const stallNARSize = 64 << 20

// uploadPath PUTs nar and a narinfo naming it as /nix/store/<hash>-name,
// and returns the hash part and the NAR's URL.
func uploadPath(t *testing.T, httpAddr, name string, nar []byte) (hash, narURL string) {
	t.Helper()
	sum := sha256.Sum256(nar)
	id := sha256.Sum256([]byte(name))
	hash = nixbase32.EncodeToString(id[:20])
	narURL = "nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
	resp, _ := request(t, httpAddr, "PUT", "/nar/"+name+".nar", map[string]string{"Content-Length": strconv.Itoa(len(nar))}, nar)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT of the NAR: %s", resp.Status)
	}
	ni := fmt.Sprintf("StorePath: /nix/store/%s-%s\nURL: nar/%s.nar\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: \n",
		hash, name, name, nixbase32.EncodeToString(sum[:]), len(nar))
	resp, _ = request(t, httpAddr, "PUT", "/"+hash+".narinfo", map[string]string{"Content-Length": strconv.Itoa(len(ni))}, []byte(ni))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT of the narinfo: %s", resp.Status)
	}
	return hash, narURL
}

// stalledDownload sends GET path on a connection whose receive buffer is
// 4 KiB, reads the response's headers and nothing more. It returns the
// connection, to be read later (or not).
func stalledDownload(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Before connect, so the window the client offers stays small.
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: nixcas\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	// A small buffer: ReadResponse must not read much of the body.
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 16), nil)
	if err != nil {
		t.Fatalf("stalled download: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength != stallNARSize+stallNARFraming {
		t.Fatalf("stalled download: %s, Content-Length %d", resp.Status, resp.ContentLength)
	}
	c.SetDeadline(time.Time{})
	return c
}

// stallNARFraming is the NAR framing around the one file of the NAR.
const stallNARFraming = 8 + 16 + 8 + 8 + 8 + 8 + 8 + 8 + 16 + 8 + 8 + 8

// TestServeStalledDownloads: downloads whose clients stop reading hold
// render slots until --http-write-timeout cuts them; meanwhile a NAR
// download beyond --max-renders is answered 503 with Retry-After and a
// narinfo is still served. Once they are cut, their slots and memory
// are free and the NAR downloads whole.
//
// Not parallel: it holds downloads against a 3 s write timeout and
// reads the buffers they hold after a second.
func TestServeStalledDownloads(t *testing.T) {
	const renders = 3
	dir := filepath.Join(t.TempDir(), "data")
	data := make([]byte, stallNARSize)
	rand.NewChaCha8([32]byte{7}).Read(data)
	nar := e2eNAROf(e2eTokFile(string(data)))
	data = nil
	if len(nar) != stallNARSize+stallNARFraming {
		t.Fatalf("NAR of %d bytes, framing miscounted", len(nar))
	}
	// The NAR goes in through a server without the write timeout: on a
	// machine at load 10, the upload of its 64 MiB to the server below
	// was cut (unexpected EOF) before it was answered.
	up := startGRPCServe(t, dir)
	hash, narURL := uploadPath(t, up.httpAddr, "stall", nar)
	up.stop(t)
	srv := startGRPCServe(t, dir, "--max-renders", strconv.Itoa(renders), "--http-write-timeout", "3s")
	base := "http://" + srv.httpAddr
	inProgress := func() float64 { return metric(t, base, `nixcas_http_in_progress{kind="render"}`) }
	held := func() float64 { return metric(t, base, "nixcas_render_chunk_buffer_bytes") }

	stalled := make([]net.Conn, renders)
	started := time.Now()
	for i := range stalled {
		stalled[i] = stalledDownload(t, srv.httpAddr, narURL)
	}
	if n := inProgress(); n != renders {
		t.Fatalf("%v renders in progress beside %d stalled downloads", n, renders)
	}
	// Past the stall detection (250 ms), each render holds at most the
	// chunk it is writing (256 KiB at most), where it had fetched ahead
	// up to 32.
	time.Sleep(time.Second)
	heldStalled := held()
	if heldStalled > renders*256<<10 {
		t.Errorf("%d stalled downloads hold %.0f bytes of chunk buffers, want at most one 256 KiB chunk each", renders, heldStalled)
	}

	// Every render slot is held: one more NAR download is turned away,
	// while narinfos are still served.
	resp, _ := request(t, srv.httpAddr, "GET", "/"+narURL, nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("GET of a NAR beside %d stalled downloads: %s, Retry-After %q; want 503, Retry-After 5", renders, resp.Status, resp.Header.Get("Retry-After"))
	}
	resp.Body.Close()
	sent := time.Now()
	resp, _ = request(t, srv.httpAddr, "GET", "/"+hash+".narinfo", nil, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("narinfo beside %d stalled downloads answered in %v", renders, time.Since(sent).Round(time.Microsecond))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "/nix/store/"+hash+"-stall") {
		t.Errorf("GET of a narinfo beside %d stalled downloads: %s %q", renders, resp.Status, body)
	}
	if n := inProgress(); n != renders {
		t.Errorf("%v renders in progress after the 503, want %d", n, renders)
	}

	// --http-write-timeout cuts them (bounded against hangs): the slots
	// are free and the server closes the connections before the NAR's end.
	waitFor(t, 60*time.Second, "stalled downloads cut", func() bool { return inProgress() == 0 })
	cut := time.Since(started)
	if n := held(); n != 0 {
		t.Errorf("%.0f bytes of chunk buffers still held once the stalled downloads were cut", n)
	}
	for i, c := range stalled {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil && !strings.Contains(err.Error(), "connection reset") {
			t.Errorf("stalled download %d: %v after %d bytes", i, err, n)
		}
		if n >= int64(len(nar)) {
			t.Errorf("stalled download %d received %d bytes, the whole NAR: it was not cut", i, n)
		}
	}
	t.Logf("%d stalled downloads held %.0f KiB of chunk buffers, and were cut %v after they began", renders, heldStalled/1024, cut.Round(time.Millisecond))

	// A download that reads gets the whole NAR.
	resp, _ = request(t, srv.httpAddr, "GET", "/"+narURL, nil, nil)
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(nar)) || [32]byte(h.Sum(nil)) != sha256.Sum256(nar) {
		t.Errorf("GET of the NAR once the stalled ones were cut: %s, %d bytes, %v", resp.Status, n, err)
	}
}
