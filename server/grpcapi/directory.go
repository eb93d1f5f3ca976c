package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/store"
)

// maxPutDirectoryBytes bounds the directories of one Put stream (their
// canonical encodings), all held in memory until the stream is validated.
const maxPutDirectoryBytes = 256 << 20

// directoryService implements snix.castore.v1.DirectoryService.
type directoryService struct {
	castorepb.UnimplementedDirectoryServiceServer
	cas castore.Store
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
// says; every directory sent must be reachable from the root. Nothing of
// a refused stream is stored.
func (s *directoryService) Put(stream castorepb.DirectoryService_PutServer) error {
	ctx := stream.Context()
	var (
		received = map[castore.Digest]*castore.Directory{}
		order    []*castore.Directory
		root     castore.Digest
		total    int
		stored   = map[castore.Digest]uint64{} // sizes of stored directories named
	)
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
		if total += len(enc); total > maxPutDirectoryBytes {
			return fmt.Errorf("%w: directories of more than %d bytes in one stream", castore.ErrInvalid, maxPutDirectoryBytes)
		}
		d := castore.Hash(enc)
		for _, e := range dir.Directories {
			size, err := s.sizeOf(ctx, e.Digest, received, stored)
			if err != nil {
				return fmt.Errorf("directory %s, entry %q: %w", d, e.Name, err)
			}
			if size != e.Size {
				return fmt.Errorf("%w: directory %s, entry %q: size %d, the directory has %d", castore.ErrInvalid, d, e.Name, e.Size, size)
			}
		}
		root = d
		if _, dup := received[d]; !dup {
			received[d] = dir
			order = append(order, dir)
		}
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

// sizeOf returns the size of directory d, received earlier in the stream
// or stored; one neither is an error wrapping store.ErrIncomplete.
func (s *directoryService) sizeOf(ctx context.Context, d castore.Digest, received map[castore.Digest]*castore.Directory, stored map[castore.Digest]uint64) (uint64, error) {
	if dir, ok := received[d]; ok {
		return dir.Size(), nil
	}
	if size, ok := stored[d]; ok {
		return size, nil
	}
	dir, err := s.cas.GetDirectory(ctx, d)
	if errors.Is(err, castore.ErrNotFound) {
		return 0, fmt.Errorf("%w: directory %s is neither stored nor sent before", store.ErrIncomplete, d)
	}
	if err != nil {
		return 0, err
	}
	stored[d] = dir.Size()
	return stored[d], nil
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
