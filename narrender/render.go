package narrender

import (
	"context"
	"encoding/binary"
	"io"
	"math"

	"github.com/nixcas/nixcas/castore"
)

// Store is what rendering reads: directories, blob indexes and chunks,
// and nothing else (a read-only or remote store will do).
type Store = castore.ReadStore

// renderAheadParts bounds the parts of a NAR (framing, chunks being
// fetched) queued ahead of the writer (in batches of at most partBatch,
// and one being gathered), and renderAheadBytes the bytes of
// the buffers of the chunks among them (castore.FetchBufferSize): a render
// holds at most that many bytes of chunks fetched ahead, and looks far
// enough ahead in a tree of small files for the frames after the one being
// decoded to decode at the same time on the other cores.
const (
	renderAheadParts = 1024
	renderAheadBytes = 16 << 20
)

// renderFetchers bounds the chunk fetchers of all renders in the process
// (past the first of each). A first render of the go1.22.0 toolchain,
// every frame decoded, ran up to about 700 of them, with about 12 MiB of
// goroutine stacks: 4096 lets a few renders at once decode frames on
// every core, and bounds the stacks of many to about 70 MiB; renders past
// them go on with fewer fetchers, on cores the others keep busy anyway.
var renderFetchers = castore.NewWorkerLimit(4096)

// Render writes the NAR of the tree at root to w. A walker goroutine reads
// directories and queues chunk fetches ahead of the writer, so reading and
// decompressing overlap with writing; files of at most [SingleChunkMax]
// bytes are fetched as their one chunk without a blob index look-up.
// Chunks are checked for size (and re-hashed when s is castore.Verifying),
// directories against their digests and sizes; a mismatch is an error
// wrapping castore.ErrCorrupt, and w then holds a partial NAR.
func Render(ctx context.Context, w io.Writer, s Store, root castore.Entry) error {
	return renderRange(ctx, w, s, root, 0, math.MaxUint64, false)
}

// appendString appends s in NAR string encoding.
func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, padding(uint64(len(s))))...)
}

// padding is the number of zero bytes after a string of n bytes.
func padding(n uint64) int { return int((8 - n%8) % 8) }
