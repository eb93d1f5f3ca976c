package httpcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// fakeSource is a binary cache in memory whose files can fail, counting
// what is opened.
type fakeSource struct {
	files map[string][]byte
	fail  map[string]error
	mu    sync.Mutex
	opens map[string]int
	total atomic.Int64
}

func (s *fakeSource) Open(_ context.Context, name string) (io.ReadCloser, error) {
	s.total.Add(1)
	s.mu.Lock()
	s.opens[name]++
	s.mu.Unlock()
	if err := s.fail[name]; err != nil {
		return nil, err
	}
	b, ok := s.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *fakeSource) List(context.Context, func(string) error) error {
	return errors.New("fake source: not listable")
}

// pullThroughPath adds a path of contents to src (narinfo and
// uncompressed NAR, the NAR stored as stored, which may differ from it)
// and returns its hash part and NAR hash.
func pullThroughPath(t *testing.T, src *fakeSource, name, contents, stored string) (store.PathDigest, [32]byte) {
	t.Helper()
	var nar, bad bytes.Buffer
	if err := testtree.WriteNAR(&nar, testtree.File(testtree.Text(contents))); err != nil {
		t.Fatal(err)
	}
	if err := testtree.WriteNAR(&bad, testtree.File(testtree.Text(stored))); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nar.Bytes())
	ph := sha256.Sum256([]byte(name))
	hash := nixbase32.EncodeToString(ph[:20])
	nh := nixbase32.EncodeToString(sum[:])
	src.files[hash+".narinfo"] = fmt.Appendf(nil, "StorePath: %s/%s-%s\nURL: nar/%s.nar\nCompression: none\nNarHash: sha256:%s\nNarSize: %d\nReferences: \nSig: upstream-1:%s\n",
		store.StoreDir, hash, name, nh, nh, nar.Len(), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64)))
	src.files["nar/"+nh+".nar"] = bad.Bytes()
	d, err := store.ParsePathDigest(hash)
	if err != nil {
		t.Fatal(err)
	}
	return d, sum
}

// TestPullThrough: paths are described from the upstream's narinfo,
// fetched once when their NAR is asked for (concurrent requests share the
// fetch), then served locally; a NAR that does not match its narinfo is
// refused and nothing is recorded; upstream failures are ErrNotFound
// (no such narinfo) or ErrUnavailable.
func TestPullThrough(t *testing.T) {
	ctx := t.Context()
	src := &fakeSource{files: map[string][]byte{}, fail: map[string]error{}, opens: map[string]int{}}
	good, goodNAR := pullThroughPath(t, src, "good", "good contents\n", "good contents\n")
	corrupt, corruptNAR := pullThroughPath(t, src, "corrupt", "what the narinfo says\n", "what the NAR holds\n")
	broken, _ := pullThroughPath(t, src, "broken", "x\n", "x\n")
	src.fail[broken.String()+".narinfo"] = errors.New("fake source: connection refused")
	cas, index := newStore(t)
	pt, err := httpcache.NewPullThrough(httpcache.PullThroughOptions{CAS: cas, Index: index, Upstream: src})
	if err != nil {
		t.Fatal(err)
	}

	missing := store.PathDigest{1, 2, 3}
	for _, tc := range []struct {
		name string
		d    store.PathDigest
		want error // nil: found
	}{
		{"in the upstream", good, nil},
		{"not in the upstream", missing, store.ErrNotFound},
		{"upstream failing", broken, store.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pt.Get(ctx, tc.d)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Get: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.NARSha256 != goodNAR || len(p.Signatures) != 1 || p.Signatures[0].Name != "upstream-1" {
				t.Errorf("Get: %+v, want the upstream's NAR hash and signature", p)
			}
		})
	}

	// Nothing fetched yet: the local index does not have it.
	if _, err := index.Get(ctx, good); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("local index before the NAR was asked for: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			p, err := pt.GetByNARHash(ctx, goodNAR)
			if err == nil && p.Root.Kind != castore.KindFile {
				err = fmt.Errorf("root %+v, want a file", p.Root)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := src.opens["nar/"+nixbase32.EncodeToString(goodNAR[:])+".nar"]; n != 1 {
		t.Errorf("NAR fetched %d times by 8 concurrent requests, want once", n)
	}
	p, err := index.Get(ctx, good)
	if err != nil || len(p.Signatures) != 1 {
		t.Fatalf("local index after the fetch: %+v, %v, want the path with the upstream's signature", p, err)
	}
	before := src.total.Load()
	if _, err := pt.Get(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := pt.GetByNARHash(ctx, goodNAR); err != nil {
		t.Fatal(err)
	}
	if n := src.total.Load() - before; n != 0 {
		t.Errorf("serving a fetched path asked the upstream %d times", n)
	}

	// A NAR that is not what its narinfo says.
	if _, err := pt.Get(ctx, corrupt); err != nil {
		t.Fatal(err)
	}
	if _, err := pt.GetByNARHash(ctx, corruptNAR); !errors.Is(err, castore.ErrCorrupt) {
		t.Errorf("GetByNARHash of a corrupt NAR: %v, want castore.ErrCorrupt", err)
	}
	if _, err := index.Get(ctx, corrupt); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a corrupt NAR was recorded: %v", err)
	}
	// A NAR hash no narinfo named.
	if _, err := pt.GetByNARHash(ctx, [32]byte{9}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetByNARHash of an unknown hash: %v, want ErrNotFound", err)
	}
	if err := pt.Put(ctx, p); err == nil {
		t.Errorf("Put on the pull-through cache succeeded")
	}
}
