package wrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
)

// Metrics are the Prometheus counters Counting stores count into, one
// series per store name (label "store"). Make them once per registry.
type Metrics struct {
	ops        *prometheus.CounterVec // store, op, result
	chunkBytes *prometheus.CounterVec // store, direction
	chunksPut  *prometheus.CounterVec // store, result
}

// Operation names, the "op" label of nixcas_castore_operations_total.
const (
	opHasChunk     = "has_chunk"
	opGetChunk     = "get_chunk"
	opPutChunk     = "put_chunk"
	opGetBlobIndex = "get_blob_index"
	opPutBlob      = "put_blob"
	opGetDirectory = "get_directory"
	opPutDirectory = "put_directory"
)

// NewMetrics makes the counters and registers them with reg (none when
// reg is nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_castore_operations_total",
			Help: "Calls to a castore, by store, operation and result (ok, not_found, error).",
		}, []string{"store", "op", "result"}),
		chunkBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_castore_chunk_bytes_total",
			Help: "Chunk bytes read from and written to a castore (direction read or written), as the calls carried them: uncompressed, or in stored form for encoded reads and puts; a put of a chunk already stored counts.",
		}, []string{"store", "direction"}),
		chunksPut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_castore_chunks_put_total",
			Help: "Chunks put to a castore, by whether they were added or already stored (result added or present).",
		}, []string{"store", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ops, m.chunkBytes, m.chunksPut} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("castore metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Counting returns s counting every call into m under the label
// store=name: calls by operation and result, chunk bytes read and
// written, chunks added and already present. Chunks put in their stored
// form (castore.PutEncoded) are counted as puts. Other powers of s are
// found below it with castore.As, uncounted. Close closes s.
func Counting(s castore.Store, m *Metrics, name string) castore.Store {
	c := counting{Store: s, m: m, name: name, ops: map[string][3]prometheus.Counter{}}
	for _, op := range []string{opHasChunk, opGetChunk, opPutChunk, opGetBlobIndex, opPutBlob, opGetDirectory, opPutDirectory} {
		c.ops[op] = [3]prometheus.Counter{
			m.ops.WithLabelValues(name, op, "ok"),
			m.ops.WithLabelValues(name, op, "not_found"),
			m.ops.WithLabelValues(name, op, "error"),
		}
	}
	c.read = m.chunkBytes.WithLabelValues(name, "read")
	c.written = m.chunkBytes.WithLabelValues(name, "written")
	c.added = m.chunksPut.WithLabelValues(name, "added")
	c.present = m.chunksPut.WithLabelValues(name, "present")
	return c
}

type counting struct {
	castore.Store
	m    *Metrics
	name string
	// The counters, looked up once.
	ops                           map[string][3]prometheus.Counter
	read, written, added, present prometheus.Counter
}

var _ castore.EncodedChunkStore = counting{}

func (c counting) Unwrap() any { return c.Store }

// count counts one call of op that ended with err.
func (c counting) count(op string, err error) {
	i := 0
	switch {
	case errors.Is(err, castore.ErrNotFound):
		i = 1
	case err != nil:
		i = 2
	}
	c.ops[op][i].Inc()
}

func (c counting) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	ok, err := c.Store.HasChunk(ctx, d)
	c.count(opHasChunk, err)
	return ok, err
}

func (c counting) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := c.Store.GetChunk(ctx, d, dst)
	c.count(opGetChunk, err)
	if err == nil {
		c.read.Add(float64(len(out) - len(dst)))
	}
	return out, err
}

func (c counting) PutChunk(ctx context.Context, ch castore.Chunk) (bool, error) {
	added, err := c.Store.PutChunk(ctx, ch)
	c.countPut(len(ch.Data()), added, err)
	return added, err
}

func (c counting) countPut(size int, added bool, err error) {
	c.count(opPutChunk, err)
	switch {
	case err != nil:
	case added:
		c.added.Inc()
		c.written.Add(float64(size))
	default:
		c.present.Inc()
		c.written.Add(float64(size))
	}
}

func (c counting) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	refs, err := c.Store.GetBlobIndex(ctx, d)
	c.count(opGetBlobIndex, err)
	return refs, err
}

func (c counting) PutBlob(ctx context.Context, d castore.Digest, size uint64, chunks []castore.ChunkRef) error {
	err := c.Store.PutBlob(ctx, d, size, chunks)
	c.count(opPutBlob, err)
	return err
}

func (c counting) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	dir, err := c.Store.GetDirectory(ctx, d)
	c.count(opGetDirectory, err)
	return dir, err
}

func (c counting) PutDirectory(ctx context.Context, dir *castore.Directory) (castore.Digest, error) {
	d, err := c.Store.PutDirectory(ctx, dir)
	c.count(opPutDirectory, err)
	return d, err
}

// GetEncodedChunk implements castore.EncodedChunkStore, counted as a
// GetChunk (bytes read: the stored form's).
func (c counting) GetEncodedChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := castore.GetEncoded(ctx, c.Store, d, dst)
	c.count(opGetChunk, err)
	if err == nil {
		c.read.Add(float64(len(out) - len(dst)))
	}
	return out, err
}

// PutEncodedChunk implements castore.EncodedChunkStore, counted as a
// PutChunk (bytes written: the stored form's).
func (c counting) PutEncodedChunk(ctx context.Context, d castore.Digest, stored []byte) (bool, error) {
	added, err := castore.PutEncoded(ctx, c.Store, d, stored)
	c.countPut(len(stored), added, err)
	return added, err
}
