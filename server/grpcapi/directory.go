package grpcapi

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/store"
)

// directoryService implements snix.castore.v1.DirectoryService.
type directoryService struct {
	castorepb.UnimplementedDirectoryServiceServer
	cas       castore.Store
	limits    castore.TreeLimits
	maxStream int64       // memory one Put stream may hold
	held      *byteBudget // memory all Put streams hold
}

// Get streams a directory and, when recursive, every directory below it,
// breadth first, each once and only after a directory naming it.
func (s *directoryService) Get(req *castorepb.GetDirectoryRequest, stream castorepb.DirectoryService_GetServer) error {
	ctx := stream.Context()
	root, err := digestArg(req.GetDigest(), "digest")
	if err != nil {
		return err
	}
	queue := []castore.Digest{root}
	seen := map[castore.Digest]bool{root: true}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		dir, err := s.cas.GetDirectory(ctx, d)
		if err != nil {
			return err
		}
		if err := stream.Send(castore.DirectoryToProto(dir)); err != nil {
			return err
		}
		if !req.GetRecursive() {
			return nil
		}
		for _, e := range dir.Directories {
			if !seen[e.Digest] {
				seen[e.Digest] = true
				queue = append(queue, e.Digest)
			}
		}
	}
	return nil
}

// Put receives directories leaves first, the root last, validates the
// whole stream and only then stores it, children first, synced. Each
// directory must be valid; every directory it names must have come
// earlier in the stream or be stored already, with the size its entry
// says; every directory sent must be reachable from the root. The tree
// each directory describes once expanded must keep the tree limits
// (checked with overflow-safe counts, each distinct directory measured
// once), and the stream may hold at most maxStream bytes of directories
// in memory, and all streams together what held allows. Nothing of a
// refused stream is stored.
func (s *directoryService) Put(stream castorepb.DirectoryService_PutServer) error {
	ctx := stream.Context()
	var (
		received = map[castore.Digest]*castore.Directory{}
		order    []*castore.Directory
		root     castore.Digest
		held     int64
		meter    = castore.NewTreeMeter(s.limits)
	)
	defer func() { s.held.release(held) }()
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		dir, err := castore.DirectoryFromProto(msg)
		if err != nil {
			return fmt.Errorf("directory %d of the stream: %w", len(order), err)
		}
		enc := dir.Marshal()
		d := castore.Hash(enc)
		if _, dup := received[d]; dup {
			root = d
			continue
		}
		n := heldBytes(dir, len(enc))
		if held+n > s.maxStream {
			return fmt.Errorf("%w: directory %d of the stream: the stream's directories would hold more than %d bytes in memory (the DirectoryService.Put stream limit)", errBusy, len(order), s.maxStream)
		}
		if !s.held.take(n) {
			return fmt.Errorf("%w: directory %d of the stream: Put streams hold %d bytes of directories, limit %d; try again later", errBusy, len(order), s.held.used(), s.held.max)
		}
		held += n
		for _, e := range dir.Directories {
			if _, ok := meter.Known(e.Digest); ok {
				continue
			}
			// Not sent before: it must be stored, and is measured there.
			ref := castore.Entry{Kind: castore.KindDirectory, Digest: e.Digest, Size: e.Size}
			if _, err := meter.Measure(ctx, s.cas, ref); err != nil {
				if errors.Is(err, castore.ErrNotFound) {
					err = fmt.Errorf("%w: %v: it is neither stored nor sent before", store.ErrIncomplete, err)
				}
				return fmt.Errorf("directory %s, entry %q: %w", d, e.Name, err)
			}
		}
		if _, err := meter.Add(d, dir); err != nil {
			return err
		}
		root = d
		received[d] = dir
		order = append(order, dir)
	}
	if len(order) == 0 {
		return fmt.Errorf("%w: no directories", castore.ErrInvalid)
	}
	if err := checkConnected(root, received); err != nil {
		return err
	}
	for _, dir := range order {
		if _, err := s.cas.PutDirectory(ctx, dir); err != nil {
			return err
		}
	}
	if err := s.cas.Sync(ctx); err != nil {
		return err
	}
	return stream.SendAndClose(&castorepb.PutDirectoryResponse{RootDigest: root[:]})
}

// heldBytes estimates the memory a received directory takes while a Put
// stream keeps it: its encoding's length (names, digests, targets) plus
// the Go values and map entry around them.
func heldBytes(dir *castore.Directory, encoded int) int64 {
	entries := len(dir.Directories) + len(dir.Files) + len(dir.Symlinks)
	return int64(encoded) + 48*int64(entries) + 256
}

// byteBudget is memory shared by concurrent requests.
type byteBudget struct {
	mu  sync.Mutex
	n   int64
	max int64
}

// take reserves n bytes, or reports false when that would pass the limit.
func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n+n > b.max {
		return false
	}
	b.n += n
	return true
}

// release returns n bytes taken before.
func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.n -= n
	b.mu.Unlock()
}

func (b *byteBudget) used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// checkConnected checks that every received directory is reachable from
// root through received directories.
func checkConnected(root castore.Digest, received map[castore.Digest]*castore.Directory) error {
	reached := map[castore.Digest]bool{root: true}
	queue := []castore.Digest{root}
	for len(queue) > 0 {
		dir := received[queue[0]]
		queue = queue[1:]
		for _, e := range dir.Directories {
			if _, ok := received[e.Digest]; ok && !reached[e.Digest] {
				reached[e.Digest] = true
				queue = append(queue, e.Digest)
			}
		}
	}
	if len(reached) == len(received) {
		return nil
	}
	for d := range received {
		if !reached[d] {
			return fmt.Errorf("%w: directory %s is not reachable from the root %s", castore.ErrInvalid, d, root)
		}
	}
	return nil
}
