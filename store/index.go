package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/storepb"
)

// MetaStore keeps records of the Nix layer beside the castore, in the same
// database; pebblestore.Store implements it.
type MetaStore interface {
	GetMeta(ctx context.Context, kind byte, key []byte) ([]byte, error)
	SetMeta(ctx context.Context, records ...castore.MetaRecord) error
	ScanMeta(ctx context.Context, kind byte, prefix []byte, fn func(key, value []byte) error) error
	Sync(ctx context.Context) error
}

// Index maps store paths (and NAR hashes) to PathInfos. It is safe for
// concurrent use.
type Index struct {
	meta   MetaStore
	cas    castore.Store
	signer *Signer // nil: signs nothing
	// mu orders the read-modify-write of a path's record, and with it the
	// path count (count.go).
	mu    sync.Mutex
	paths pathCount
	// now is the clock of access times (nil: time.Now); access holds
	// reads not yet written (access.go).
	now    func() time.Time
	access accessTimes
	// putGate: Put holds it for reading from checking a tree to
	// recording it; a garbage collection waits for those in progress
	// before it lists the live paths (see GC).
	putGate sync.RWMutex
	// changed are called, under mu, with each path recorded or deleted
	// (OnChange).
	changed []func(PathDigest)
}

// NewIndex returns the index kept in meta over the trees in cas; for the
// embedded store both are the same pebblestore.Store.
func NewIndex(meta MetaStore, cas castore.Store, opts ...IndexOption) *Index {
	x := &Index{meta: meta, cas: cas}
	for _, o := range opts {
		o(x)
	}
	return x
}

// Get returns the PathInfo of the store path whose hash is d, with a
// signature added for each of the index's keys under whose name it has
// none (a path recorded before a key was configured is signed when read;
// see Signer.SignMissing).
func (x *Index) Get(ctx context.Context, d PathDigest) (*PathInfo, error) {
	v, err := x.meta.GetMeta(ctx, KindPathInfo, d[:])
	if errors.Is(err, castore.ErrNotFound) {
		return nil, fmt.Errorf("%w: store path %s", ErrNotFound, d)
	}
	if err != nil {
		return nil, err
	}
	p, err := decodePathInfo(v)
	if err != nil {
		return nil, err
	}
	return x.signer.SignMissing(p), nil
}

// GetByNARHash returns the PathInfo of a store path whose NAR has that
// SHA-256.
func (x *Index) GetByNARHash(ctx context.Context, h [sha256.Size]byte) (*PathInfo, error) {
	v, err := x.meta.GetMeta(ctx, KindNARHash, h[:])
	if errors.Is(err, castore.ErrNotFound) {
		return nil, fmt.Errorf("%w: NAR hash %x", ErrNotFound, h)
	}
	if err != nil {
		return nil, err
	}
	var d PathDigest
	if len(v) != len(d) {
		return nil, fmt.Errorf("%w: NAR hash record of %d bytes", castore.ErrCorrupt, len(v))
	}
	copy(d[:], v)
	return x.Get(ctx, d)
}

// Put validates p, checks that its whole tree is in the castore and that
// its content address (if any) agrees with its store path and contents
// (CheckContentAddress), and only then records it (replacing any PathInfo
// of the same path) durably, with a signature of each of the index's keys
// (WithSigner) added: a PathInfo that fails a check is never signed and
// never replaces the one recorded. Signatures already recorded for the
// path that p lacks are kept, except that under the name of one of the
// index's keys only that key's own signature is ever recorded (see
// Signer.Sign). p is not modified. The path's access time
// (LastAccess) is set to now in the same write.
func (x *Index) Put(ctx context.Context, p *PathInfo) error {
	if err := p.Validate(); err != nil {
		return err
	}
	x.putGate.RLock()
	defer x.putGate.RUnlock()
	// A use of the root, recorded before the tree is checked, keeps the
	// tree from a collection that another process runs meanwhile on the
	// same database (see castore/pebblestore's gcuse.go); in this process
	// the collection's epoch covers the check itself.
	if err := useRoot(ctx, x.cas, p.Root); err != nil {
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	if err := CheckTree(ctx, x.cas, p.Root); err != nil {
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	if err := CheckContentAddress(ctx, x.cas, p); err != nil {
		return err
	}
	// Signing before the lock leaves the signature in the signer's cache
	// for the second Sign, after the merge, under the lock.
	p = x.signer.Sign(p)
	d := p.Digest()
	x.mu.Lock()
	isNew, m, err := x.record(ctx, d, p)
	if err == nil {
		x.accessWritten(d, m)
		if isNew {
			x.paths.add()
		}
	}
	// Also after a failed write, which may have been made after all
	// (a database that committed but did not answer).
	x.notifyChanged(d)
	x.mu.Unlock()
	if err != nil {
		return err
	}
	return x.meta.Sync(ctx)
}

// MetaUpdater is a MetaStore whose read-modify-write of one record holds
// across processes sharing its database (pebblestore.Store.UpdateMeta).
type MetaUpdater interface {
	UpdateMeta(ctx context.Context, kind byte, key []byte, fn func(old []byte) ([]castore.MetaRecord, error)) error
}

// record writes p as the PathInfo of d, with its NAR hash and access
// records; a record it replaces with the same NAR gives its signatures to
// the new one. Where the MetaStore is a MetaUpdater this is one update,
// so that two servers on one database recording the same path with
// different signatures keep both. The caller holds x.mu. It reports
// whether d had no record, and the access time written.
func (x *Index) record(ctx context.Context, d PathDigest, p *PathInfo) (isNew bool, access uint32, err error) {
	merge := func(old []byte) ([]castore.MetaRecord, error) {
		q := p
		isNew = old == nil
		if old != nil {
			// A record that does not decode is replaced whole.
			if o, err := decodePathInfo(old); err == nil && o.NARSha256 == p.NARSha256 {
				// Sign drops what o holds under the index's key
				// names and is not the key's own signature of q.
				q = x.signer.Sign(mergeSignatures(p, o.Signatures))
			}
		}
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(q.ToProto())
		if err != nil {
			return nil, err
		}
		rec, m := x.accessRecord(d)
		access = m
		return []castore.MetaRecord{
			{Kind: KindPathInfo, Key: d[:], Value: v},
			{Kind: KindNARHash, Key: q.NARSha256[:], Value: d[:]},
			rec,
		}, nil
	}
	if u, ok := x.meta.(MetaUpdater); ok {
		err = u.UpdateMeta(ctx, KindPathInfo, d[:], merge)
		return isNew, access, err
	}
	old, err := x.meta.GetMeta(ctx, KindPathInfo, d[:])
	if errors.Is(err, castore.ErrNotFound) {
		old, err = nil, nil
	}
	if err != nil {
		return false, 0, err
	}
	records, err := merge(old)
	if err != nil {
		return false, 0, err
	}
	return isNew, access, x.meta.SetMeta(ctx, records...)
}

// mergeSignatures returns p with the signatures of old it lacks added.
func mergeSignatures(p *PathInfo, old []Signature) *PathInfo {
	q := *p
	q.Signatures = append([]Signature(nil), p.Signatures...)
	for _, o := range old {
		dup := false
		for _, s := range q.Signatures {
			if s.Name == o.Name && string(s.Data) == string(o.Data) {
				dup = true
				break
			}
		}
		if !dup {
			q.Signatures = append(q.Signatures, o)
		}
	}
	return &q
}

// List calls fn for every PathInfo (signed as by Get), in order of store path digest, stopping
// at fn's first error.
func (x *Index) List(ctx context.Context, fn func(*PathInfo) error) error {
	return x.meta.ScanMeta(ctx, KindPathInfo, nil, func(_, v []byte) error {
		p, err := decodePathInfo(v)
		if err != nil {
			return err
		}
		return fn(x.signer.SignMissing(p))
	})
}

func decodePathInfo(v []byte) (*PathInfo, error) {
	var pb storepb.PathInfo
	if err := proto.Unmarshal(v, &pb); err != nil {
		return nil, fmt.Errorf("%w: stored PathInfo: %v", castore.ErrCorrupt, err)
	}
	p, err := PathInfoFromProto(&pb)
	if err != nil {
		return nil, fmt.Errorf("%w: stored PathInfo: %v", castore.ErrCorrupt, err)
	}
	return p, nil
}

// useRoot records a use of the directory or file root is (castore.RecordUse).
func useRoot(ctx context.Context, cas any, root castore.Entry) error {
	switch root.Kind {
	case castore.KindDirectory:
		return castore.RecordUse(ctx, cas, castore.UseDirectory, root.Digest)
	case castore.KindFile:
		return castore.RecordUse(ctx, cas, castore.UseBlob, root.Digest)
	}
	return nil
}

// CheckTree makes sure every directory, blob index and chunk of the tree
// at root is in s, and that directory sizes agree. A missing piece is an
// error wrapping ErrIncomplete.
func CheckTree(ctx context.Context, s castore.ReadStore, root castore.Entry) error {
	seen := map[castore.Digest]bool{}
	var walk func(e castore.Entry, at *treePath) error
	walk = func(e castore.Entry, at *treePath) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch e.Kind {
		case castore.KindSymlink:
			return nil
		case castore.KindFile:
			if seen[e.Digest] {
				return nil
			}
			chunks, err := castore.BlobChunks(ctx, s, e.Digest, e.Size)
			if err != nil {
				return missing(at.String(), err)
			}
			for _, c := range chunks {
				ok, err := s.HasChunk(ctx, c.Digest)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("%w: %q: chunk %s of blob %s is missing", ErrIncomplete, at, c.Digest, e.Digest)
				}
			}
			seen[e.Digest] = true
			return nil
		case castore.KindDirectory:
			dir, err := s.GetDirectory(ctx, e.Digest)
			if err != nil {
				return missing(at.String(), err)
			}
			if dir.Size() != e.Size {
				return fmt.Errorf("%w: %q: directory %s has size %d, its entry says %d", ErrInvalid, at, e.Digest, dir.Size(), e.Size)
			}
			if seen[e.Digest] {
				return nil
			}
			for _, c := range dir.Entries() {
				if err := walk(c, &treePath{parent: at, name: c.Name}); err != nil {
					return err
				}
			}
			seen[e.Digest] = true
			return nil
		}
		return fmt.Errorf("%w: %q: entry of %v", ErrInvalid, at, e.Kind)
	}
	return walk(root, nil)
}

// treePath is a path inside a tree as a chain of names, joined only when
// an error names it, so that a deep tree costs one small node a level.
type treePath struct {
	parent *treePath
	name   string
}

// String returns the path, "/"-separated from the root ("" for the root).
func (p *treePath) String() string {
	var names []string
	for ; p != nil; p = p.parent {
		names = append(names, p.name)
	}
	slices.Reverse(names)
	if len(names) == 0 {
		return ""
	}
	return "/" + strings.Join(names, "/")
}

func missing(path string, err error) error {
	if errors.Is(err, castore.ErrNotFound) {
		return fmt.Errorf("%w: %q: %v", ErrIncomplete, path, err)
	}
	return err
}

// NARFile is what a NAR file name that a client uploaded stands for: the
// NAR whose SHA-256 is NARSha256, compressed as Compression says (a
// narinfo Compression value such as "xz").
type NARFile struct {
	NARSha256   [sha256.Size]byte
	Compression string
}

// Limits of a NARFile record.
const (
	maxNARFileURL         = 1024
	maxNARFileCompression = 32
)

// PutNARFile records, durably, that url (a narinfo URL such as
// "nar/<filehash>.nar.xz") names f, replacing what it named before. A NAR
// may have any number of such names.
func (x *Index) PutNARFile(ctx context.Context, url string, f NARFile) error {
	if url == "" || len(url) > maxNARFileURL {
		return fmt.Errorf("%w: NAR file URL of %d bytes (want 1 to %d)", ErrInvalid, len(url), maxNARFileURL)
	}
	if f.Compression == "" || len(f.Compression) > maxNARFileCompression {
		return fmt.Errorf("%w: NAR file %s: compression %q", ErrInvalid, url, f.Compression)
	}
	v := append(f.NARSha256[:len(f.NARSha256):len(f.NARSha256)], f.Compression...)
	if err := x.meta.SetMeta(ctx, castore.MetaRecord{Kind: KindNARFile, Key: []byte(url), Value: v}); err != nil {
		return err
	}
	return x.meta.Sync(ctx)
}

// GetNARFile returns what url was recorded to name by PutNARFile; an
// unknown url is ErrNotFound.
func (x *Index) GetNARFile(ctx context.Context, url string) (NARFile, error) {
	var f NARFile
	if url == "" || len(url) > maxNARFileURL {
		return f, fmt.Errorf("%w: NAR file %q", ErrNotFound, url)
	}
	v, err := x.meta.GetMeta(ctx, KindNARFile, []byte(url))
	if errors.Is(err, castore.ErrNotFound) {
		return f, fmt.Errorf("%w: NAR file %s", ErrNotFound, url)
	}
	if err != nil {
		return f, err
	}
	if len(v) <= len(f.NARSha256) || len(v) > len(f.NARSha256)+maxNARFileCompression {
		return f, fmt.Errorf("%w: NAR file record of %s has %d bytes", castore.ErrCorrupt, url, len(v))
	}
	copy(f.NARSha256[:], v)
	f.Compression = string(v[len(f.NARSha256):])
	return f, nil
}

// Delete removes the PathInfo of the store path whose hash is d, durably,
// with its access time and pin, and its NAR hash record when that still
// names d (another path with the same NAR keeps its own). It reports
// whether the path was recorded. From its return on, Get and GetByNARHash
// answer ErrNotFound for the path; its tree stays in the castore until a
// garbage collection finds it unreferenced. Safe for concurrent use with
// Put: the later of the two wins.
func (x *Index) Delete(ctx context.Context, d PathDigest) (bool, error) {
	x.mu.Lock()
	ok, err := x.deleteLocked(ctx, d)
	x.mu.Unlock()
	if err != nil || !ok {
		return false, err
	}
	return true, x.meta.Sync(ctx)
}

// deleteLocked is Delete without the sync; x.mu is held.
func (x *Index) deleteLocked(ctx context.Context, d PathDigest) (bool, error) {
	old, err := x.Get(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	records := []castore.MetaRecord{
		{Kind: KindPathInfo, Key: d[:], Delete: true},
		{Kind: metaKindAccess, Key: d[:], Delete: true},
		{Kind: metaKindPin, Key: d[:], Delete: true},
	}
	v, err := x.meta.GetMeta(ctx, KindNARHash, old.NARSha256[:])
	switch {
	case err == nil && string(v) == string(d[:]):
		records = append(records, castore.MetaRecord{Kind: KindNARHash, Key: old.NARSha256[:], Delete: true})
	case err != nil && !errors.Is(err, castore.ErrNotFound):
		return false, err
	}
	err = x.meta.SetMeta(ctx, records...)
	x.notifyChanged(d) // after a failed write too, as in Put
	if err != nil {
		return false, err
	}
	x.paths.remove()
	x.access.forget(d)
	return true, nil
}

// OnChange registers fn to be called with the digest of every store path
// whose PathInfo this index records (Put) or deletes (Delete, retention):
// after the change is visible to Get, before the call that made it
// returns (also when the write failed, which may have been made anyway). fn runs under the index's lock, so it must be quick and must
// not call the index. Changes made by other processes sharing the same
// metadata (several servers on one PostgreSQL database) are not reported.
func (x *Index) OnChange(fn func(PathDigest)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.changed = append(x.changed, fn)
}

// notifyChanged calls the OnChange functions with d; x.mu is held.
func (x *Index) notifyChanged(d PathDigest) {
	for _, fn := range x.changed {
		fn(d)
	}
}
