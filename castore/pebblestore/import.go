package pebblestore

import (
	"context"
	"fmt"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// Importing frames
//
// A client that receives a frame whole from a server (castore.FrameSource,
// the ReadFrames call) holds a valid frame with its name: the same zstd
// bytes, named by their BLAKE3, that the server's packer wrote. Rather
// than take its chunks out and put each one (a Pebble value per chunk,
// packed again later), ImportFrames writes the frame as it came, as a hot
// frame, and points the chunks the store lacks at it: the frame is the
// stored form, written once.
//
// Order, as the packer's: the frames' objects are written and synced
// (ObjectStore.SyncObjects) before one batch per frame registers it and
// indexes its chunks (switchToFrame). A crash before a frame's batch leaves
// an object no registry record names, which the next writable open
// deletes (sweepFrames); a crash after it leaves the frame registered and
// its chunks indexed, as after a pack. The registry lists the chunks
// imported, not the frame's other chunks (a client does not know their
// digests): garbage collection and compaction count those bytes as dead.

// FrameChunk is a chunk of a frame: its digest, and where its bytes are in
// the decoded frame.
type FrameChunk struct {
	Digest castore.Digest
	Offset uint32
	Length uint32
}

// VerifiedFrame is a frame checked whole by VerifyFrame: its stored bytes
// match its name and decode (zstd content checksum included), and every
// chunk it was checked for hashes to its digest. Only VerifyFrame makes
// one, so a store imports nothing unchecked.
type VerifiedFrame struct {
	name    castore.Digest
	stored  []byte
	decoded []byte
	chunks  []FrameChunk
}

// VerifyFrame checks the stored bytes of frame name against the name,
// decodes them (at most MaxFrameSize), and checks each of chunks against
// its digest: ErrCorrupt naming the frame (and the chunk's place) for
// anything that does not match. The VerifiedFrame keeps stored and the
// decoded bytes: the caller must not modify stored afterwards.
func VerifyFrame(name castore.Digest, stored []byte, chunks []FrameChunk) (*VerifiedFrame, error) {
	return VerifyFrameInto(name, stored, nil, chunks)
}

// VerifyFrameInto is VerifyFrame decoding into the array of dst (from
// dst[:0]) when it has the room, for a caller that reuses its buffers:
// decoding into memory already in use costs no fresh pages, which a
// pull of hundreds of frames otherwise takes from the kernel one page
// fault at a time. The frame's decoded bytes then live in dst's array:
// the caller must not reuse it while anything reads the frame.
func VerifyFrameInto(name castore.Digest, stored, dst []byte, chunks []FrameChunk) (*VerifiedFrame, error) {
	decoded, err := DecodeFrame(name, stored, dst[:0])
	if err != nil {
		return nil, err
	}
	for _, c := range chunks {
		end := uint64(c.Offset) + uint64(c.Length)
		if c.Length > castore.MaxChunkSize || end > uint64(len(decoded)) {
			return nil, fmt.Errorf("%w: frame %s: chunk %s at %d+%d beyond its %d decoded bytes", castore.ErrCorrupt, frameName(name), c.Digest, c.Offset, c.Length, len(decoded))
		}
		if got := castore.Hash(decoded[c.Offset:end]); got != c.Digest {
			return nil, fmt.Errorf("%w: frame %s: the chunk at %d+%d hashes to %s, want %s", castore.ErrCorrupt, frameName(name), c.Offset, c.Length, got, c.Digest)
		}
	}
	return &VerifiedFrame{name: name, stored: stored, decoded: decoded, chunks: chunks}, nil
}

// Name returns the frame's name.
func (f *VerifiedFrame) Name() castore.Digest { return f.name }

// Stored returns the frame's stored bytes, as given to VerifyFrame. The
// slice belongs to f: read it, never modify it.
func (f *VerifiedFrame) Stored() []byte { return f.stored }

// Decoded returns the decoded frame. The slice belongs to f: read it,
// never modify it.
func (f *VerifiedFrame) Decoded() []byte { return f.decoded }

// Chunks returns the chunks f was checked for. The slice belongs to f.
func (f *VerifiedFrame) Chunks() []FrameChunk { return f.chunks }

// Chunk returns the bytes of f's i-th chunk, within Decoded.
func (f *VerifiedFrame) Chunk(i int) []byte {
	c := f.chunks[i]
	return f.decoded[c.Offset : c.Offset+c.Length]
}

// ImportFrames stores frames as hot frames and indexes, in each, the
// chunks it was verified for that the store lacks; chunks the store
// already has stay where they are. The objects are written and synced
// first, then each frame is registered with its chunks in one batch (see
// above); the batches are not synced: call Sync. It returns the number of
// chunks indexed. A frame of which no chunk is new is not written; one
// whose new chunks were all stored by another writer between the check
// and its batch is registered with no chunk, as the packer registers a
// frame whose chunks all moved meanwhile, and garbage collection deletes
// it.
func (s *Store) ImportFrames(ctx context.Context, frames []*VerifiedFrame) (int, error) {
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	type importing struct {
		info    *frameInfo
		entries []queuedChunk
	}
	var todo []importing
	for _, vf := range frames {
		var entries []queuedChunk
		for _, c := range vf.chunks {
			// useChunk also marks the chunk for a collection in progress.
			if ok, err := s.useChunk(ctx, db, c.Digest); err != nil {
				return 0, fmt.Errorf("castore: import frame %s: %w", frameName(vf.name), err)
			} else if !ok {
				entries = append(entries, queuedChunk{digest: c.Digest, size: int(c.Length), offset: int(c.Offset), imported: true})
			}
		}
		if len(entries) == 0 {
			continue // nothing new: the frame is not written at all
		}
		if err := s.objects.PutObject(ctx, frameName(vf.name), vf.stored); err != nil {
			return 0, fmt.Errorf("castore: import: %w", err)
		}
		todo = append(todo, importing{
			info:    &frameInfo{name: vf.name, tier: FrameHot, created: time.Now(), stored: uint64(len(vf.stored)), decoded: uint64(len(vf.decoded)), filtered: frameIsFiltered(vf.stored)},
			entries: entries,
		})
	}
	if len(todo) == 0 {
		return 0, nil
	}
	if err := s.objects.SyncObjects(ctx); err != nil {
		return 0, fmt.Errorf("castore: import: %w", err)
	}
	// As a pack: no compaction or collection moves frames meanwhile.
	s.packMu.Lock()
	defer s.packMu.Unlock()
	n := 0
	for _, t := range todo {
		if err := s.switchToFrame(ctx, db, t.info, t.entries); err != nil {
			return n, fmt.Errorf("castore: import: %w", err)
		}
		n += len(t.info.chunks)
	}
	s.lastWrite.Store(time.Now().UnixNano())
	return n, nil
}
