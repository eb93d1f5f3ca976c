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

	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// heldSource is a fakeSource whose NAR file sends its first half, then
// waits for release before it sends the rest, or fails with fail.
type heldSource struct {
	*fakeSource
	nar     string
	release chan struct{}
	fail    error
}

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

// pullThroughServer serves a pull-through cache of src over a new store
// on loopback, spooling into a directory of the test's; the caller
// closes the server.
func pullThroughServer(t *testing.T, src httpcache.Source) (*httpcache.PullThrough, *store.Index, *httptest.Server) {
	t.Helper()
	cas, index := newStore(t)
	pt, err := httpcache.NewPullThrough(httpcache.PullThroughOptions{CAS: cas, Index: index, Upstream: src, SpoolDir: t.TempDir()})
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
			fake := &fakeSource{files: map[string][]byte{}, fail: map[string]error{}, opens: map[string]int{}}
			var nar bytes.Buffer
			// Larger than the buffers between the upstream and the client.
			if err := testtree.WriteNAR(&nar, testtree.File(testtree.Random(1, 4<<20))); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(nar.Bytes())
			nh := nixbase32.EncodeToString(sum[:])
			ph := sha256.Sum256([]byte("big"))
			hash := nixbase32.EncodeToString(ph[:20])
			fake.files[hash+".narinfo"] = fmt.Appendf(nil, "StorePath: %s/%s-big\nURL: nar/%s.nar\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: \n",
				store.StoreDir, hash, nh, nh, nar.Len())
			fake.files["nar/"+nh+".nar"] = nar.Bytes()
			src := &heldSource{fakeSource: fake, nar: "nar/" + nh + ".nar", release: make(chan struct{})}
			if fail {
				src.fail = errors.New("held source: connection reset")
			}
			pt, index, ts := pullThroughServer(t, src)
			defer ts.Close()
			d, err := store.ParsePathDigest(hash)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pt.Get(ctx, d); err != nil { // as a narinfo request does
				t.Fatal(err)
			}

			var released sync.Once
			release := func() { released.Do(func() { close(src.release) }) }
			defer release() // a failing check must not leave the fetch held
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
				release()
				t.Fatal("no byte of the NAR within 30 s while the upstream held back its second half")
			}
			if hd.err != nil {
				t.Fatal(hd.err)
			}
			resp, first := hd.resp, hd.first
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(nar.Len()) {
				t.Fatalf("GET: %s, Content-Length %d; want 200 and %d", resp.Status, resp.ContentLength, nar.Len())
			}
			if !bytes.Equal(first, nar.Bytes()[:len(first)]) {
				t.Fatal("the first MiB sent is not the NAR's")
			}
			release()
			rest, err := io.ReadAll(resp.Body)
			body := append(first, rest...)
			if fail {
				if err == nil || len(body) == nar.Len() {
					t.Errorf("upstream failed midway: read %d of %d bytes, err %v; want the body cut short", len(body), nar.Len(), err)
				}
				return
			}
			if err != nil || !bytes.Equal(body, nar.Bytes()) {
				t.Fatalf("body: %d bytes, err %v; want the %d bytes of the NAR", len(body), err, nar.Len())
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
