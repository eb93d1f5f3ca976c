package bench

import (
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// Strategy names, as the results and the JSON report spell them.
const (
	StrategyRaw           = "raw"
	StrategyXZ            = "xz"
	StrategyZstd19        = "zstd-19"
	StrategyFileDedup     = "file-dedup"
	StrategyNARCDCZstd    = "nar-cdc-64k-zstd"
	StrategyNARCDCLZ4     = "nar-cdc-64k-lz4"
	StrategyNixcas16kLZ4  = "nixcas-16k-lz4"
	StrategyNixcas64kLZ4  = "nixcas-64k-lz4"
	StrategyNixcas256kLZ4 = "nixcas-256k-lz4"
	StrategyNixcas64kZstd = "nixcas-64k-zstd"
	StrategyNixcasFrames  = "nixcas-frames"
	StrategyNixcasCompact = "nixcas-compact"
	StrategyNixcasDisk    = "nixcas-disk"
	StrategyLimitZstdLong = "limit-zstd-long"
)

// DedupStrategies lists every strategy in report order, each with what its
// stored bytes count.
var DedupStrategies = []struct{ Name, Counts string }{
	{StrategyRaw, "every NAR as it is"},
	{StrategyXZ, "every NAR compressed alone by `xz -6 -T1` (what Nix uploads to cache.nixos.org)"},
	{StrategyZstd19, "every NAR compressed alone by `zstd -19 -T1`"},
	{StrategyFileDedup, "each distinct regular-file content once, uncompressed (as `nix-store --optimise` links them); no NAR framing, names, directories or symlinks"},
	{StrategyNARCDCZstd, "FastCDC 16/64/256 KiB over each whole NAR stream, each distinct chunk once, zstd level 3 per chunk (+1 codec byte, raw if zstd does not shrink it); chunk lists not counted"},
	{StrategyNARCDCLZ4, "the same NAR-level chunks, lz4 per chunk exactly as castore.ChunkEncoder stores them (codec byte included); chunk lists not counted"},
	{StrategyNixcas16kLZ4, "Stats.StoredBytes of a castore store with frames off (pebblestore.FrameOptions.Off: each chunk stored alone, lz4, codec byte included) after ingesting every NAR, FastCDC per file 4/16/64 KiB (directories and blob indexes not counted)"},
	{StrategyNixcas64kLZ4, "the same at FastCDC 16/64/256 KiB (the default), counted as each new chunk of the nixcas-frames store is stored (castore.ChunkEncoder, exactly what a store with frames off counts)"},
	{StrategyNixcas256kLZ4, "the same at FastCDC 64/256/1024 KiB"},
	{StrategyNixcas64kZstd, "the chunks of nixcas-64k-lz4, each compressed alone by zstd level 3 instead (+1 codec byte, raw if zstd does not shrink it)"},
	{StrategyNixcasFrames, "Stats.StoredBytes of a default pebblestore.Store (64 KiB chunks, frames on) after Flush: chunks packed in ingest order into 4 MiB hot frames at zstd's default level (compressed frame bytes; directories and blob indexes not counted)"},
	{StrategyNixcasCompact, "the same data in another default store, compacted after each NAR (castore Compact in the order of store.ChunkOrder over every store path so far, each named by its input, as `nixcas store compact` orders them), incrementally (each compaction writes the new chunks as a run, and merges runs --fan-out at a time): 4 MiB cold frames at zstd's best level; Stats.StoredBytes after Compact"},
	{StrategyNixcasDisk, "on-disk size of the nixcas-frames store after Flush and Close: frames, sstables, blob files, MANIFEST, OPTIONS and marker files; write-ahead logs and LOCK excluded"},
	{StrategyLimitZstdLong, "every NAR concatenated into one stream compressed by `zstd --long=31 -19 --single-thread` (redundancy removed without chunk boundaries; not a store anyone can serve from)"},
}

// zstdLevel is the per-chunk zstd level: klauspost/compress's SpeedDefault,
// which matches zstd's default level 3.
const zstdLevel = zstd.SpeedDefault

// newChunkZstd returns a zstd encoder for single chunks, without frame
// checksums (a chunk's BLAKE3 digest already checks it). EncodeAll is safe
// for concurrent use.
func newChunkZstd() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderCRC(false))
}

// zstdChunkSize returns the stored size of data as one zstd frame behind a
// codec byte, or raw behind a codec byte when zstd does not make it smaller:
// the rule castore.ChunkEncoder applies to lz4.
func zstdChunkSize(enc *zstd.Encoder, data []byte, scratch []byte) (int64, []byte) {
	scratch = enc.EncodeAll(data, scratch[:0])
	return 1 + int64(min(len(scratch), len(data))), scratch
}

// blobIndexEntryBytes is what one chunk costs in a stored blob index:
// a digest and a 32-bit size (castore's Pebble layout).
const blobIndexEntryBytes = castore.DigestSize + 4

// meteredStore is a castore.Store that also counts what Stats does not:
// the bytes of the directories and blob indexes it stores (each distinct
// one once, as a store keeps them), and what each newly stored chunk would
// take stored alone: with lz4 as castore.ChunkEncoder encodes it (what a
// store with frames off counts in Stats.StoredBytes), when lz4 is set, and
// with zstd instead, when zstd is set.
type meteredStore struct {
	castore.Store
	lz4       bool
	zstd      *zstd.Encoder // nil: no zstd sizing
	lz4Bytes  atomic.Int64
	zstdBytes atomic.Int64
	scratch   sync.Pool // *chunkScratch

	mu        sync.Mutex
	dirs      map[castore.Digest]struct{}
	indexes   map[castore.Digest]struct{}
	metaBytes int64
}

// chunkScratch is what sizing one chunk needs.
type chunkScratch struct {
	enc       castore.ChunkEncoder
	lz4, zstd []byte
}

func newMeteredStore(s castore.Store, lz4 bool, z *zstd.Encoder) *meteredStore {
	return &meteredStore{
		Store:   s,
		lz4:     lz4,
		zstd:    z,
		dirs:    make(map[castore.Digest]struct{}),
		indexes: make(map[castore.Digest]struct{}),
	}
}

// Unwrap returns the store underneath, so that castore.As finds its
// optional powers.
func (m *meteredStore) Unwrap() any { return m.Store }

// PutChunk implements castore.ChunkStore.
func (m *meteredStore) PutChunk(ctx context.Context, c castore.Chunk) (bool, error) {
	added, err := m.Store.PutChunk(ctx, c)
	if !added || !m.lz4 && m.zstd == nil {
		return added, err
	}
	sc, _ := m.scratch.Get().(*chunkScratch)
	if sc == nil {
		sc = new(chunkScratch)
	}
	if m.lz4 {
		sc.lz4 = sc.enc.Encode(sc.lz4[:0], c.Data())
		m.lz4Bytes.Add(int64(len(sc.lz4)))
	}
	if m.zstd != nil {
		var n int64
		n, sc.zstd = zstdChunkSize(m.zstd, c.Data(), sc.zstd)
		m.zstdBytes.Add(n)
	}
	m.scratch.Put(sc)
	return added, err
}

// PutBlob implements castore.BlobIndexStore.
func (m *meteredStore) PutBlob(ctx context.Context, d castore.Digest, size uint64, chunks []castore.ChunkRef) error {
	if err := m.Store.PutBlob(ctx, d, size, chunks); err != nil {
		return err
	}
	if len(chunks) > 1 {
		m.mu.Lock()
		if _, ok := m.indexes[d]; !ok {
			m.indexes[d] = struct{}{}
			m.metaBytes += int64(len(chunks) * blobIndexEntryBytes)
		}
		m.mu.Unlock()
	}
	return nil
}

// PutDirectory implements castore.DirectoryStore.
func (m *meteredStore) PutDirectory(ctx context.Context, dir *castore.Directory) (castore.Digest, error) {
	d, err := m.Store.PutDirectory(ctx, dir)
	if err != nil {
		return d, err
	}
	m.mu.Lock()
	if _, ok := m.dirs[d]; !ok {
		m.dirs[d] = struct{}{}
		m.metaBytes += int64(len(dir.Marshal()))
	}
	m.mu.Unlock()
	return d, nil
}

// MetaBytes returns the bytes of the distinct directories and blob indexes
// stored so far.
func (m *meteredStore) MetaBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metaBytes
}

// fileDedup counts each distinct regular-file content once, by BLAKE3
// digest, as nix-store --optimise keeps one copy of each.
type fileDedup struct {
	seen  map[castore.Digest]struct{}
	bytes int64
}

func (f *fileDedup) consume(r io.Reader) error {
	if f.seen == nil {
		f.seen = make(map[castore.Digest]struct{})
	}
	nr := narrender.NewReader(r)
	h := castore.NewHasher()
	buf := make([]byte, 256<<10)
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if hdr.Type != narrender.TypeRegular {
			continue
		}
		h.Reset()
		if _, err := io.CopyBuffer(h, nr, buf); err != nil {
			return err
		}
		var d castore.Digest
		h.Sum(d[:0])
		if _, ok := f.seen[d]; !ok {
			f.seen[d] = struct{}{}
			f.bytes += int64(hdr.Size)
		}
	}
}

// narCDC cuts whole NAR streams into FastCDC chunks (as Attic and
// nix-casync do) and counts each distinct chunk once, compressed with lz4
// (castore.ChunkEncoder) and with zstd. The figures do not depend on which
// worker gets which chunk: each distinct chunk is compressed exactly once.
type narCDC struct {
	opts castore.ChunkerOptions
	zstd *zstd.Encoder

	mu        sync.Mutex
	seen      map[castore.Digest]struct{}
	lz4Bytes  int64
	zstdBytes int64
	refs      int64 // chunk references, repeats included: what the NARs' chunk lists would hold
}

// consume cuts the stream on the calling goroutine and hashes and
// compresses the chunks on GOMAXPROCS workers.
func (n *narCDC) consume(r io.Reader) error {
	if n.seen == nil {
		n.seen = make(map[castore.Digest]struct{})
	}
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *[]byte, 2*workers)
	var bufs sync.Pool
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var enc castore.ChunkEncoder
			var lz4buf, zbuf []byte
			for bp := range jobs {
				data := *bp
				d := castore.Hash(data)
				n.mu.Lock()
				_, dup := n.seen[d]
				n.seen[d] = struct{}{}
				n.mu.Unlock()
				if !dup {
					lz4buf = enc.Encode(lz4buf[:0], data)
					var z int64
					z, zbuf = zstdChunkSize(n.zstd, data, zbuf)
					n.mu.Lock()
					n.lz4Bytes += int64(len(lz4buf))
					n.zstdBytes += z
					n.mu.Unlock()
				}
				bufs.Put(bp)
			}
		}()
	}
	c := castore.NewChunker(n.opts)
	c.Reset(r)
	var err error
	for {
		var data []byte
		if data, err = c.Next(); err != nil {
			break
		}
		n.refs++
		bp, _ := bufs.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		*bp = append((*bp)[:0], data...)
		jobs <- bp
	}
	close(jobs)
	wg.Wait()
	if err == io.EOF {
		err = nil
	}
	return err
}

// isCompressorStrategy reports whether a strategy runs compressor
// processes (left out by DedupOptions.NoCompressors).
func isCompressorStrategy(name string) bool {
	return name == StrategyXZ || name == StrategyZstd19 || name == StrategyLimitZstdLong
}
