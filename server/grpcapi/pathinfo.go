package grpcapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/store"
)

// pathInfoService implements snix.store.v1.PathInfoService.
type pathInfoService struct {
	storepb.UnimplementedPathInfoServiceServer
	cas       castore.Store
	index     *store.Index
	maxVerify uint64 // 0: no bound
	m         *metrics
	limits    castore.TreeLimits
	timeout   time.Duration // of each render
}

// Get returns the PathInfo of a store path by its 20-byte digest, noting
// the read for retention.
func (s *pathInfoService) Get(ctx context.Context, req *storepb.GetPathInfoRequest) (*storepb.PathInfo, error) {
	h := req.GetByOutputHash()
	var d store.PathDigest
	if len(h) != len(d) {
		return nil, fmt.Errorf("%w: by_output_hash of %d bytes, want %d", store.ErrInvalid, len(h), len(d))
	}
	copy(d[:], h)
	p, err := s.index.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	s.index.RecordAccess(d) // for retention: a pull reads the path
	return p.ToProto(), nil
}

// Put validates a PathInfo (store path, references and their digests,
// deriver, content address, signatures' form), checks that its whole tree
// is stored and keeps the tree limits, renders the tree's NAR to check the claimed size and SHA-256,
// and records it. It returns what is recorded: signatures the store held
// for the same NAR are kept beside the new ones.
func (s *pathInfoService) Put(ctx context.Context, pb *storepb.PathInfo) (*storepb.PathInfo, error) {
	p, err := store.PathInfoFromProto(pb)
	if err != nil {
		return nil, err
	}
	if old, err := s.index.Get(ctx, p.Digest()); err != nil || old.Root != p.Root || old.NARSha256 != p.NARSha256 || old.NARSize != p.NARSize {
		// Not known already: check the NAR claims against the tree.
		if _, err := castore.MeasureTree(ctx, s.cas, p.Root, s.limits); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Path, err)
		}
		if err := store.CheckTree(ctx, s.cas, p.Root); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Path, err)
		}
		// The NAR's size comes from the directories alone: check it, and
		// the budget, before reading any chunk.
		size, err := narrender.Size(ctx, s.cas, p.Root)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Path, err)
		}
		if size != p.NARSize {
			return nil, fmt.Errorf("%w: %s: the tree's NAR has %d bytes, the PathInfo says %d",
				store.ErrInvalid, p.Path, size, p.NARSize)
		}
		size, sum, err := s.narOf(ctx, p.Root, size)
		if err != nil {
			return nil, fmt.Errorf("%s: rendering the NAR: %w", p.Path, err)
		}
		if size != p.NARSize || sum != p.NARSha256 {
			return nil, fmt.Errorf("%w: %s: the tree's NAR has %d bytes and SHA-256 %x, the PathInfo says %d bytes and %x",
				store.ErrInvalid, p.Path, size, sum, p.NARSize, p.NARSha256)
		}
	}
	if err := s.index.Put(ctx, p); err != nil {
		return nil, err
	}
	got, err := s.index.Get(ctx, p.Digest())
	if err != nil {
		return nil, err
	}
	return got.ToProto(), nil
}

// CalculateNAR renders the NAR of a stored tree and returns its size and
// SHA-256. A tree over the tree limits is refused before rendering.
func (s *pathInfoService) CalculateNAR(ctx context.Context, pb *castorepb.Entry) (*storepb.CalculateNARResponse, error) {
	e, err := castore.EntryFromProto(pb)
	if err != nil {
		return nil, err
	}
	if _, err := castore.MeasureTree(ctx, s.cas, e, s.limits); err != nil {
		return nil, err
	}
	size, err := narrender.Size(ctx, s.cas, e)
	if err != nil {
		return nil, err
	}
	size, sum, err := s.narOf(ctx, e, size)
	if err != nil {
		return nil, err
	}
	return &storepb.CalculateNARResponse{NarSize: size, NarSha256: sum[:]}, nil
}

// List streams every PathInfo, in order of store path digest.
func (s *pathInfoService) List(_ *storepb.ListPathInfoRequest, stream storepb.PathInfoService_ListServer) error {
	return s.index.List(stream.Context(), func(p *store.PathInfo) error {
		return stream.Send(p.ToProto())
	})
}

// narOf renders the NAR of root, of size bytes (narrender.Size), within
// the render timeout and returns its size and SHA-256, refusing a NAR over
// the budget before reading any of it.
func (s *pathInfoService) narOf(ctx context.Context, root castore.Entry, size uint64) (uint64, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if s.maxVerify > 0 && size > s.maxVerify {
		return 0, sum, fmt.Errorf("%w: the NAR to check has %d bytes, at most %d per request (the server's --max-verify-bytes)", ErrTooMuchWork, size, s.maxVerify)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.timeout, fmt.Errorf("%w: rendering the NAR took longer than the server's render timeout (%v)", context.DeadlineExceeded, s.timeout))
	defer cancel()
	w := &narSum{h: sha256.New(), verified: s.m.verified}
	if err := narrender.Render(ctx, w, s.cas, root); err != nil {
		if cause := context.Cause(ctx); cause != nil && errors.Is(err, context.DeadlineExceeded) {
			err = cause
		}
		return 0, sum, err
	}
	w.h.Sum(sum[:0])
	return w.n, sum, nil
}

// narSum counts and hashes what is written to it.
type narSum struct {
	h        hash.Hash
	n        uint64
	verified prometheus.Counter
}

func (w *narSum) Write(p []byte) (int, error) {
	w.n += uint64(len(p))
	w.verified.Add(float64(len(p)))
	return w.h.Write(p)
}
