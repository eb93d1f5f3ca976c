package httpcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// heldSource is a fakeSource whose NAR file sends its first half, then
// waits for release before it sends the rest, or fails with fail.
type heldSource struct {
	*fakeSource
	nar      string
	release  chan struct{}
	released sync.Once
	fail     error
}

// Release lets the held NAR go on. Safe twice.
func (s *heldSource) Release() { s.released.Do(func() { close(s.release) }) }

func (s *heldSource) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := s.fakeSource.Open(ctx, name)
	if err != nil || name != s.nar {
		return rc, err
	}
	b, _ := io.ReadAll(rc)
	half := len(b) / 2
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:half]), readerFunc(func(p []byte) (int, error) {
		<-s.release
		if s.fail != nil {
			return 0, s.fail
		}
		return 0, io.EOF
	}), bytes.NewReader(b[half:]))), nil
}

// heldNAR is a path whose NAR (a 4 MiB file, larger than the buffers
// between the upstream and a client) a heldSource holds back after its
// first half; the caller releases it (src.Release).
func heldNAR(t *testing.T) (src *heldSource, nar []byte, sum [sha256.Size]byte, d store.PathDigest) {
	t.Helper()
	fake := &fakeSource{files: map[string][]byte{}, fail: map[string]error{}, opens: map[string]int{}}
	var buf bytes.Buffer
	if err := testtree.WriteNAR(&buf, testtree.File(testtree.Random(1, 4<<20))); err != nil {
		t.Fatal(err)
	}
	nar = buf.Bytes()
	sum = sha256.Sum256(nar)
	nh := nixbase32.EncodeToString(sum[:])
	ph := sha256.Sum256([]byte("big"))
	hash := nixbase32.EncodeToString(ph[:20])
	fake.files[hash+".narinfo"] = fmt.Appendf(nil, "StorePath: %s/%s-big\nURL: nar/%s.nar\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: \n",
		store.StoreDir, hash, nh, nh, len(nar))
	fake.files["nar/"+nh+".nar"] = nar
	d, err := store.ParsePathDigest(hash)
	if err != nil {
		t.Fatal(err)
	}
	return &heldSource{fakeSource: fake, nar: "nar/" + nh + ".nar", release: make(chan struct{})}, nar, sum, d
}

// pullThroughServer serves a pull-through cache of src over a new store
// on loopback, spooling into a directory of the test's, with the options
// changed by each of opts; the caller closes the server.
func pullThroughServer(t *testing.T, src httpcache.Source, opts ...func(*httpcache.PullThroughOptions)) (*httpcache.PullThrough, *store.Index, *httptest.Server) {
	t.Helper()
	cas, index := newStore(t)
	o := httpcache.PullThroughOptions{CAS: cas, Index: index, Upstream: src, SpoolDir: t.TempDir()}
	for _, f := range opts {
		f(&o)
	}
	pt, err := httpcache.NewPullThrough(o)
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpcache.New(httpcache.Options{CAS: cas, Index: pt})
	if err != nil {
		t.Fatal(err)
	}
	return pt, index, httptest.NewServer(h)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestPullThroughStreamsWhileFetching: the first GET of a NAR the
// pull-through cache fetches gets its bytes as they come from the
// upstream, before the fetch ends (Nix gives up on a download that sends
// nothing for 300 s); the whole body is the NAR, and the path is local
// afterwards. An upstream that fails midway cuts the response short.
func TestPullThroughStreamsWhileFetching(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%t", fail), func(t *testing.T) {
			ctx := t.Context()
			src, nar, sum, d := heldNAR(t)
			nh := nixbase32.EncodeToString(sum[:])
			if fail {
				src.fail = errors.New("held source: connection reset")
			}
			pt, index, ts := pullThroughServer(t, src)
			defer ts.Close()
			if _, err := pt.Get(ctx, d); err != nil { // as a narinfo request does
				t.Fatal(err)
			}

			defer src.Release() // a failing check must not leave the fetch held
			// The response and a first part of it arrive while the
			// upstream holds the rest back.
			type head struct {
				resp  *http.Response
				first []byte
				err   error
			}
			got := make(chan head, 1)
			go func() {
				resp, err := http.Get(ts.URL + "/nar/" + nh + ".nar")
				if err != nil {
					got <- head{err: err}
					return
				}
				first := make([]byte, 1<<20)
				_, err = io.ReadFull(resp.Body, first)
				got <- head{resp, first, err}
			}()
			var hd head
			select {
			case hd = <-got:
			case <-time.After(30 * time.Second):
				src.Release()
				t.Fatal("no byte of the NAR within 30 s while the upstream held back its second half")
			}
			if hd.err != nil {
				t.Fatal(hd.err)
			}
			resp, first := hd.resp, hd.first
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(nar)) {
				t.Fatalf("GET: %s, Content-Length %d; want 200 and %d", resp.Status, resp.ContentLength, len(nar))
			}
			if !bytes.Equal(first, nar[:len(first)]) {
				t.Fatal("the first MiB sent is not the NAR's")
			}
			src.Release()
			rest, err := io.ReadAll(resp.Body)
			body := append(first, rest...)
			if fail {
				if err == nil || len(body) == len(nar) {
					t.Errorf("upstream failed midway: read %d of %d bytes, err %v; want the body cut short", len(body), len(nar), err)
				}
				return
			}
			if err != nil || !bytes.Equal(body, nar) {
				t.Fatalf("body: %d bytes, err %v; want the %d bytes of the NAR", len(body), err, len(nar))
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				if _, err := index.GetByNARHash(ctx, sum); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the path is not local 30 s after its NAR was sent")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestPullThroughFetchFailingAtOnce: a fetch that fails before its first
// byte is answered with an error status, as without streaming, not with
// a cut connection, and the upstream is asked once.
func TestPullThroughFetchFailingAtOnce(t *testing.T) {
	src := &fakeSource{files: map[string][]byte{}, fail: map[string]error{}, opens: map[string]int{}}
	d, sum := pullThroughPath(t, src, "gone", "x\n", "x\n")
	src.fail["nar/"+nixbase32.EncodeToString(sum[:])+".nar"] = errors.New("fake source: connection refused")
	pt, _, ts := pullThroughServer(t, src)
	defer ts.Close()
	if _, err := pt.Get(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ts.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar?hash=" + d.String())
	if err != nil {
		t.Fatalf("GET: %v; want an answer with an error status", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Errorf("GET of a NAR whose fetch fails: %s, want an error status", resp.Status)
	}
	if n := src.opens["nar/"+nixbase32.EncodeToString(sum[:])+".nar"]; n != 1 {
		t.Errorf("the NAR was asked of the upstream %d times for one GET, want once", n)
	}
}

// waitFor polls cond every 10 ms until it holds, failing the test with
// what after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30 s: %s", what)
		}
	}
}

// getNAR GETs the NAR of hash sum from ts, sending its body (or the
// error) on the channel returned.
func getNAR(ts *httptest.Server, sum [sha256.Size]byte) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		resp, err := http.Get(ts.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar")
		if err != nil {
			got <- []byte(err.Error())
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			body = fmt.Appendf(nil, "%s: %v", resp.Status, err)
		}
		got <- body
	}()
	return got
}

// TestPullThroughSpoolGivenUp: once the client that followed a fetch
// leaves before the fetch ends, the spool empties its file and takes no
// more of the NAR (the fetch may go on for long), and a request that
// comes next waits for the fetch and gets the whole NAR from the store.
func TestPullThroughSpoolGivenUp(t *testing.T) {
	ctx := t.Context()
	src, nar, sum, d := heldNAR(t)
	defer src.Release()
	pt, _, ts := pullThroughServer(t, src)
	defer ts.Close()
	if _, err := pt.Get(ctx, d); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ts.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar")
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if _, spooled, size := httpcache.FetchSpool(pt, sum); !spooled || size < int64(len(first)) {
		t.Fatalf("while the first client reads: spooled %t, %d bytes; want the bytes it read spooled", spooled, size)
	}
	resp.Body.Close() // the client leaves
	waitFor(t, "the spool emptied after its only client left", func() bool {
		_, _, size := httpcache.FetchSpool(pt, sum)
		return size == 0
	})
	second := getNAR(ts, sum)
	src.Release()
	body := <-second
	if !bytes.Equal(body, nar) {
		t.Fatalf("GET after the spool was given up: %.200q (%d bytes); want the NAR's %d bytes", body, len(body), len(nar))
	}
}

// TestPullThroughSpoolReserve: a NAR SpoolRoom refuses (as a store's
// Room does on a disk without room for it beside its reserve) is not
// spooled; its client waits for the whole fetch and gets the NAR.
func TestPullThroughSpoolReserve(t *testing.T) {
	ctx := t.Context()
	src, nar, sum, d := heldNAR(t)
	defer src.Release()
	pt, _, ts := pullThroughServer(t, src, func(o *httpcache.PullThroughOptions) {
		o.SpoolRoom = func(uint64) error { return castore.ErrNoSpace }
	})
	defer ts.Close()
	if _, err := pt.Get(ctx, d); err != nil {
		t.Fatal(err)
	}
	got := getNAR(ts, sum)
	var spooled bool
	waitFor(t, "the fetch started", func() bool {
		var fetching bool
		fetching, spooled, _ = httpcache.FetchSpool(pt, sum)
		return fetching
	})
	if spooled {
		t.Error("a NAR was spooled on a disk without room for it beside the reserve")
	}
	src.Release()
	if body := <-got; !bytes.Equal(body, nar) {
		t.Fatalf("GET: %.200q (%d bytes); want the NAR's %d bytes", body, len(body), len(nar))
	}
}
