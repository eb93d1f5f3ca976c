package wrap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/wrap"
)

func openPebble(t *testing.T) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// errTransient is what the faulty store fails with.
var errTransient = errors.New("transient failure")

func isTransient(err error) bool { return errors.Is(err, errTransient) }

var fastRetries = wrap.RetryOptions{Transient: isTransient, Retries: 3, Delay: time.Millisecond, MaxDelay: 2 * time.Millisecond}

// flaky fails the first call of each method for each digest with
// errTransient, then calls the store it wraps.
type flaky struct {
	castore.ReadStore
	seen sync.Map // of string
}

func (f *flaky) fail(op string, d castore.Digest) error {
	if _, ok := f.seen.LoadOrStore(op+d.String(), true); !ok {
		return errTransient
	}
	return nil
}

func (f *flaky) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	if err := f.fail("HasChunk", d); err != nil {
		return false, err
	}
	return f.ReadStore.HasChunk(ctx, d)
}

func (f *flaky) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	if err := f.fail("GetChunk", d); err != nil {
		return append(dst, "garbage"...), err
	}
	return f.ReadStore.GetChunk(ctx, d, dst)
}

func (f *flaky) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	if err := f.fail("GetBlobIndex", d); err != nil {
		return nil, err
	}
	return f.ReadStore.GetBlobIndex(ctx, d)
}

func (f *flaky) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	if err := f.fail("GetDirectory", d); err != nil {
		return nil, err
	}
	return f.ReadStore.GetDirectory(ctx, d)
}

func (f *flaky) Unwrap() any { return f.ReadStore }

func mustRetrying(t *testing.T, s castore.ReadStore, o wrap.RetryOptions) castore.ReadStore {
	t.Helper()
	r, err := wrap.Retrying(s, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustMetrics(t *testing.T) *wrap.Metrics {
	t.Helper()
	m, err := wrap.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestConformance runs the store suite on every wrapper that writes, over
// memory, and on the chains of them over Pebble (one run per wrapper over
// Pebble would add minutes to the test time for no path a memory run does
// not take). The wrappers pass a blob's chunks through whatever its size:
// the suite's large blob is 16 MiB over memory (256 chunks of 64 KiB on
// average) and 32 MiB over Pebble (twice its 16 MiB memtable), not the
// default 64 MiB.
func TestConformance(t *testing.T) {
	backends := []struct {
		name      string
		open      func(t *testing.T) castore.Store
		largeBlob int64
	}{
		{"Memory", func(*testing.T) castore.Store { return new(castore.MemoryStore) }, 16 << 20},
		{"Pebble", func(t *testing.T) castore.Store { return openPebble(t) }, 32 << 20},
	}
	wrappers := []struct {
		name       string
		memoryOnly bool
		wrap       func(t *testing.T, s castore.Store) castore.Store
	}{
		{"Verifying", true, func(_ *testing.T, s castore.Store) castore.Store { return castore.Verifying(s) }},
		{"Counting", true, func(t *testing.T, s castore.Store) castore.Store { return wrap.Counting(s, mustMetrics(t), "test") }},
		{"ReadThroughEmptyRemote", true, func(_ *testing.T, s castore.Store) castore.Store {
			return wrap.ReadThrough(s, new(castore.MemoryStore))
		}},
		{"ReadThroughFlakyRemote", false, func(t *testing.T, s castore.Store) castore.Store {
			return wrap.ReadThrough(s, mustRetrying(t, &flaky{ReadStore: new(castore.MemoryStore)}, fastRetries))
		}},
		{"CountingVerifying", false, func(t *testing.T, s castore.Store) castore.Store {
			return wrap.Counting(castore.Verifying(s), mustMetrics(t), "test")
		}},
	}
	for _, b := range backends {
		for _, w := range wrappers {
			if w.memoryOnly && b.name != "Memory" {
				continue
			}
			t.Run(b.name+"/"+w.name, func(t *testing.T) {
				castoretest.RunWith(t, func(t *testing.T) castore.Store { return w.wrap(t, b.open(t)) },
					castoretest.Options{LargeBlobSize: b.largeBlob})
			})
		}
	}
}

// TestReadConformance runs the read suite on the read-only wrappers and
// on ReadThrough with an empty local store, the reads then all going to
// the remote.
func TestReadConformance(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) (castore.ReadStore, castore.Store)
	}{
		{"ReadOnly", func(*testing.T) (castore.ReadStore, castore.Store) {
			m := new(castore.MemoryStore)
			return wrap.ReadOnly(m), m
		}},
		{"Retrying", func(t *testing.T) (castore.ReadStore, castore.Store) {
			m := new(castore.MemoryStore)
			return mustRetrying(t, m, fastRetries), m
		}},
		{"RetryingFlaky", func(t *testing.T) (castore.ReadStore, castore.Store) {
			m := new(castore.MemoryStore)
			return mustRetrying(t, &flaky{ReadStore: m}, fastRetries), m
		}},
		{"ReadThroughMemoryMemory", func(*testing.T) (castore.ReadStore, castore.Store) {
			remote := new(castore.MemoryStore)
			return wrap.ReadThrough(new(castore.MemoryStore), remote), remote
		}},
		{"ReadThroughPebbleMemory", func(t *testing.T) (castore.ReadStore, castore.Store) {
			remote := new(castore.MemoryStore)
			return wrap.ReadThrough(openPebble(t), remote), remote
		}},
		{"ReadOnlyReadThrough", func(*testing.T) (castore.ReadStore, castore.Store) {
			remote := new(castore.MemoryStore)
			return wrap.ReadOnly(wrap.ReadThrough(new(castore.MemoryStore), remote)), remote
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { castoretest.RunReader(t, tt.open) })
	}
}

func TestAs(t *testing.T) {
	p := openPebble(t)
	m := new(castore.MemoryStore)
	ro := wrap.ReadOnly(p)
	chains := []struct {
		name string
		s    castore.Store
		// base is the store the powers below the wrappers belong to.
		base any
	}{
		{"bare", p, p},
		{"Verifying", castore.Verifying(p), p},
		{"Counting(Verifying)", wrap.Counting(castore.Verifying(p), mustMetrics(t), "x"), p},
		{"ReadThrough(local, remote)", wrap.ReadThrough(p, m), p},
		{"Counting(ReadThrough(Verifying))", wrap.Counting(wrap.ReadThrough(castore.Verifying(p), m), mustMetrics(t), "x"), p},
	}
	for _, c := range chains {
		if pk, ok := castore.As[castore.Packer](c.s); !ok || pk != c.base {
			t.Errorf("%s: As[Packer] = %v, %v; want the Pebble store", c.name, pk, ok)
		}
		if sc, ok := castore.As[castore.ChunkScanner](c.s); !ok || sc != c.base {
			t.Errorf("%s: As[ChunkScanner] = %v, %v; want the Pebble store", c.name, sc, ok)
		}
		if ps, ok := castore.As[*pebblestore.Store](c.s); !ok || ps != p {
			t.Errorf("%s: As[*pebblestore.Store] = %v, %v", c.name, ps, ok)
		}
	}
	// A wrapper that must see a power's calls has it itself.
	if del, ok := castore.As[castore.ChunkDeleter](ro); !ok {
		t.Error("As[ChunkDeleter] of a ReadOnly store found nothing")
	} else if _, err := del.DeleteChunk(context.Background(), castore.Hash(nil)); !errors.Is(err, wrap.ErrReadOnly) {
		t.Errorf("DeleteChunk through a ReadOnly store: %v, want ErrReadOnly", err)
	}
	// Absent powers are absent through any chain.
	if _, ok := castore.As[castore.Packer](wrap.ReadThrough(m, p)); ok {
		t.Error("As[Packer] of ReadThrough(memory, pebble) found the remote's")
	}
	if _, ok := castore.As[castore.Packer](nil); ok {
		t.Error("As of nil found a power")
	}
}

// TestReadOnlyRefusesWrites: every write through ReadOnly fails with
// ErrReadOnly and changes nothing.
func TestReadOnlyRefusesWrites(t *testing.T) {
	ctx := context.Background()
	m := new(castore.MemoryStore)
	ro := wrap.ReadOnly(m)
	data := castoretest.RandomBytes(1, 5000)
	kept := castoretest.MustPutChunk(t, m, castoretest.RandomBytes(2, 100))
	var enc castore.ChunkEncoder
	tests := []struct {
		name  string
		write func() error
	}{
		{"PutChunk", func() error { _, err := ro.PutChunk(ctx, castore.NewChunk(data)); return err }},
		{"PutBlob", func() error { return ro.PutBlob(ctx, kept, 100, nil) }},
		{"PutDirectory", func() error { _, err := ro.PutDirectory(ctx, &castore.Directory{}); return err }},
		{"PutEncoded", func() error {
			_, err := castore.PutEncoded(ctx, ro, castore.Hash(data), enc.Encode(nil, data))
			return err
		}},
		{"PutEncoded raw", func() error {
			_, err := castore.PutEncoded(ctx, ro, castore.Hash(data), append([]byte{castore.CodecRaw}, data...))
			return err
		}},
		{"DeleteChunk", func() error {
			_, err := castore.As[castore.ChunkDeleter](ro)
			if !err {
				return errors.New("no ChunkDeleter")
			}
			d, _ := castore.As[castore.ChunkDeleter](ro)
			_, derr := d.DeleteChunk(ctx, kept)
			return derr
		}},
		{"SetMeta", func() error {
			return ro.(interface {
				SetMeta(context.Context, ...castore.MetaRecord) error
			}).SetMeta(ctx, castore.MetaRecord{Kind: 'p', Key: []byte("k"), Value: []byte("v")})
		}},
	}
	before := castoretest.MustStats(t, ro)
	for _, tt := range tests {
		err := tt.write()
		if !errors.Is(err, wrap.ErrReadOnly) {
			t.Errorf("%s: error %v, want ErrReadOnly", tt.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "read-only") {
			t.Errorf("%s: error %q does not say the store is read-only", tt.name, err)
		}
	}
	if after := castoretest.MustStats(t, m); after != before {
		t.Fatalf("Stats = %+v after refused writes, before %+v", after, before)
	}
	castoretest.MustHaveChunk(t, m, kept, true)
	castoretest.MustHaveChunk(t, m, castore.Hash(data), false)
}

// failing fails every call with err, counting them.
type failing struct {
	err   error
	calls atomic.Int64
}

func (f *failing) HasChunk(context.Context, castore.Digest) (bool, error) {
	f.calls.Add(1)
	return false, f.err
}

func (f *failing) GetChunk(_ context.Context, _ castore.Digest, dst []byte) ([]byte, error) {
	f.calls.Add(1)
	return dst, f.err
}

func (f *failing) GetBlobIndex(context.Context, castore.Digest) ([]castore.ChunkRef, error) {
	f.calls.Add(1)
	return nil, f.err
}

func (f *failing) GetDirectory(context.Context, castore.Digest) (*castore.Directory, error) {
	f.calls.Add(1)
	return nil, f.err
}

func TestRetrying(t *testing.T) {
	ctx := context.Background()
	d := castore.Hash([]byte("x"))
	tests := []struct {
		name      string
		err       error
		o         wrap.RetryOptions
		wantCalls int64
		wantIs    error
	}{
		{"transient, 3 retries", errTransient, fastRetries, 4, errTransient},
		{"transient, never retried", errTransient, wrap.RetryOptions{Transient: isTransient, Retries: -1}, 1, errTransient},
		{"not found is not retried", fmt.Errorf("%w: chunk", castore.ErrNotFound), fastRetries, 1, castore.ErrNotFound},
		{"corrupt is not retried", fmt.Errorf("%w: chunk", castore.ErrCorrupt), fastRetries, 1, castore.ErrCorrupt},
	}
	for _, tt := range tests {
		calls := map[string]func(r castore.ReadStore) error{
			"HasChunk":     func(r castore.ReadStore) error { _, err := r.HasChunk(ctx, d); return err },
			"GetChunk":     func(r castore.ReadStore) error { _, err := r.GetChunk(ctx, d, nil); return err },
			"GetBlobIndex": func(r castore.ReadStore) error { _, err := r.GetBlobIndex(ctx, d); return err },
			"GetDirectory": func(r castore.ReadStore) error { _, err := r.GetDirectory(ctx, d); return err },
		}
		for name, call := range calls {
			f := &failing{err: tt.err}
			err := call(mustRetrying(t, f, tt.o))
			if !errors.Is(err, tt.wantIs) || f.calls.Load() != tt.wantCalls {
				t.Errorf("%s, %s: %v after %d calls; want %v after %d", tt.name, name, err, f.calls.Load(), tt.wantIs, tt.wantCalls)
			}
		}
	}
	// A done context stops the waits.
	f := &failing{err: errTransient}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r := mustRetrying(t, f, wrap.RetryOptions{Transient: isTransient, Retries: 100, Delay: time.Hour})
	if _, err := r.GetChunk(cctx, d, nil); !errors.Is(err, context.Canceled) && !errors.Is(err, errTransient) {
		t.Fatalf("GetChunk with a cancelled context: %v", err)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("%d calls with a cancelled context, want 1", f.calls.Load())
	}
	if _, err := wrap.Retrying(f, wrap.RetryOptions{}); !errors.Is(err, castore.ErrInvalid) {
		t.Fatalf("Retrying without a Transient classifier: %v, want ErrInvalid", err)
	}
}

// lying returns other bytes than those of the chunk asked for, and a
// directory other than the one asked for.
type lying struct{ castore.ReadStore }

func (l lying) GetChunk(_ context.Context, _ castore.Digest, dst []byte) ([]byte, error) {
	return append(dst, "not the chunk"...), nil
}

func (l lying) GetDirectory(context.Context, castore.Digest) (*castore.Directory, error) {
	return &castore.Directory{}, nil
}

func TestReadThrough(t *testing.T) {
	ctx := context.Background()
	local, remote := new(castore.MemoryStore), new(castore.MemoryStore)
	rt := wrap.ReadThrough(local, remote)
	data := castoretest.RandomBytes(3, 10000)
	d := castoretest.MustPutChunk(t, remote, data)
	dir := castoretest.MustPutDirectory(t, remote, &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "l", Target: "t"}}})
	blob, _ := castoretest.MustPutBlob(t, remote, castoretest.RandomBytes(4, 50000), 10000)

	// HasChunk answers from both, and keeps nothing.
	castoretest.MustHaveChunk(t, rt, d, true)
	castoretest.MustHaveChunk(t, local, d, false)
	// A read keeps a copy.
	if got := castoretest.MustGetChunk(t, rt, d); !bytes.Equal(got, data) {
		t.Fatal("chunk read through differs")
	}
	castoretest.MustHaveChunk(t, local, d, true)
	if _, err := rt.GetDirectory(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := local.GetDirectory(ctx, dir); err != nil {
		t.Fatalf("directory read through was not kept: %v", err)
	}
	// A blob index is returned, not kept.
	refs, err := rt.GetBlobIndex(ctx, blob)
	if err != nil || len(refs) != 5 {
		t.Fatalf("GetBlobIndex = %d refs, %v", len(refs), err)
	}
	if _, err := local.GetBlobIndex(ctx, blob); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("blob index read through was kept: %v", err)
	}
	// Once local has it, the remote is not asked.
	f := &failing{err: errTransient}
	if got := castoretest.MustGetChunk(t, wrap.ReadThrough(local, f), d); !bytes.Equal(got, data) || f.calls.Load() != 0 {
		t.Fatalf("chunk in local read back with %d remote calls", f.calls.Load())
	}
	// A remote's failure is the read's.
	if _, err := wrap.ReadThrough(new(castore.MemoryStore), f).GetChunk(ctx, d, nil); !errors.Is(err, errTransient) {
		t.Fatalf("GetChunk with a failing remote: %v", err)
	}

	// A remote sending wrong bytes: refused, nothing kept.
	local2 := new(castore.MemoryStore)
	rt2 := wrap.ReadThrough(local2, lying{remote})
	dst := []byte("prefix")
	got, err := rt2.GetChunk(ctx, d, dst)
	if !errors.Is(err, castore.ErrCorrupt) || string(got) != "prefix" {
		t.Fatalf("GetChunk from a lying remote = %q, %v; want prefix, ErrCorrupt", got, err)
	}
	if _, err := rt2.GetDirectory(ctx, dir); !errors.Is(err, castore.ErrCorrupt) {
		t.Fatalf("GetDirectory from a lying remote: %v, want ErrCorrupt", err)
	}
	if st := castoretest.MustStats(t, local2); st != (castore.Stats{}) {
		t.Fatalf("local kept %+v from a lying remote", st)
	}
}

func TestCounting(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := wrap.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrap.NewMetrics(reg); err == nil {
		t.Fatal("NewMetrics registered the same counters twice")
	}
	s := wrap.Counting(new(castore.MemoryStore), m, "local")
	data := castoretest.RandomBytes(5, 4000)
	d := castoretest.MustPutChunk(t, s, data)
	castoretest.MustPutChunk(t, s, data)
	castoretest.MustGetChunk(t, s, d)
	if _, err := s.GetChunk(ctx, castore.Hash([]byte("missing")), nil); !errors.Is(err, castore.ErrNotFound) {
		t.Fatal(err)
	}
	var enc castore.ChunkEncoder
	other := castoretest.CompressibleBytes(9000)
	if _, err := castore.PutEncoded(ctx, s, castore.Hash(other), enc.Encode(nil, other)); err != nil {
		t.Fatal(err)
	}
	if _, err := castore.PutEncoded(ctx, s, castore.Hash([]byte("wrong")), enc.Encode(nil, other)); !errors.Is(err, castore.ErrCorrupt) {
		t.Fatal(err)
	}
	for result, want := range map[string]float64{"added": 2, "present": 1} {
		got, err := gatherValue(reg, "nixcas_castore_chunks_put_total", map[string]string{"store": "local", "result": result})
		if err != nil || got != want {
			t.Errorf("chunks_put_total{result=%s} = %v, %v; want %v", result, got, err, want)
		}
	}
	for _, c := range []struct {
		op, result string
		want       float64
	}{
		{"put_chunk", "ok", 3},
		{"put_chunk", "error", 1},
		{"get_chunk", "ok", 1},
		{"get_chunk", "not_found", 1},
		{"has_chunk", "ok", 0},
	} {
		got, err := gatherValue(reg, "nixcas_castore_operations_total", map[string]string{"store": "local", "op": c.op, "result": c.result})
		if err != nil || got != c.want {
			t.Errorf("operations_total{op=%s,result=%s} = %v, %v; want %v", c.op, c.result, got, err, c.want)
		}
	}
	read, err := gatherValue(reg, "nixcas_castore_chunk_bytes_total", map[string]string{"store": "local", "direction": "read"})
	if err != nil || read != 4000 {
		t.Errorf("chunk bytes read = %v, %v; want 4000", read, err)
	}
}

// gatherValue returns the value of the series of name with labels.
func gatherValue(reg *prometheus.Registry, name string, labels map[string]string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no series %s%v", name, labels)
}
