package castore

import (
	"context"
	"fmt"
	"math/bits"
)

// A directory graph is a DAG: a directory may name the same subdirectory
// under several names, and so may its subdirectories. The tree it describes
// (what a NAR of it holds, what a render walks) can then be exponentially
// larger than the graph: 31 directories, each naming its child twice,
// describe 2^31 entries. TreeMeter measures the expanded tree in time and
// memory linear in the number of distinct directories, with overflow
// checks, so that such a root is refused before anything walks it.

// Default tree limits, far above any real store path (the largest Nix
// store paths hold a few hundred thousand entries and some GiB of files;
// PATH_MAX allows at most 2,048 levels; memory and time are linear in the
// depth, so the depth limit can sit far above that).
const (
	// MaxDepth is the default limit on directory nesting: the root
	// directory is at depth 1, its subdirectories at depth 2, and so on.
	MaxDepth = 65536
	// DefaultMaxEntries is the default limit on the entries of an
	// expanded tree (a root directory's Size).
	DefaultMaxEntries = 10_000_000
	// DefaultMaxFileBytes is the default limit on the file bytes of an
	// expanded tree, each file counted as often as it appears: 1 TiB.
	DefaultMaxFileBytes = 1 << 40
)

// TreeLimits bound a tree once its directory graph is expanded. Zero
// fields take the defaults ([TreeLimits.WithDefaults]).
type TreeLimits struct {
	MaxEntries   uint64 // default DefaultMaxEntries
	MaxFileBytes uint64 // default DefaultMaxFileBytes
	MaxDepth     int    // default MaxDepth
}

// WithDefaults returns l with zero fields set to their defaults.
func (l TreeLimits) WithDefaults() TreeLimits {
	if l.MaxEntries == 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxFileBytes == 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = MaxDepth
	}
	return l
}

// Validate reports negative limits.
func (l TreeLimits) Validate() error {
	if l.MaxDepth < 0 {
		return fmt.Errorf("%w: tree limits: depth limit %d", ErrInvalid, l.MaxDepth)
	}
	return nil
}

// TreeStats describe an expanded tree: Entries is the number of entries
// below its root (a root directory's Size), FileBytes the total size of
// its files with repeats, Depth its directory nesting (0 for a file or
// symlink, 1 for a directory without subdirectories).
type TreeStats struct {
	Entries   uint64
	FileBytes uint64
	Depth     int
}

// TreeMeter measures expanded trees against limits, remembering the
// stats of every directory it has measured, so each distinct directory
// costs one visit. Its memory grows by about 64 bytes per directory. It is
// not safe for concurrent use.
type TreeMeter struct {
	limits TreeLimits
	known  map[Digest]TreeStats
}

// NewTreeMeter returns a meter enforcing l (defaults filled in).
func NewTreeMeter(l TreeLimits) *TreeMeter {
	return &TreeMeter{limits: l.WithDefaults(), known: map[Digest]TreeStats{}}
}

// Limits returns the limits the meter enforces.
func (m *TreeMeter) Limits() TreeLimits { return m.limits }

// Known returns the stats of directory d if the meter has measured it.
func (m *TreeMeter) Known(d Digest) (TreeStats, bool) {
	st, ok := m.known[d]
	return st, ok
}

// Add measures dir, whose digest is d, from the stats of the directories
// it names, which must all be known (measured by Add or Measure before);
// each subdirectory entry's Size must equal that directory's entry count.
// A directory over a limit, an overflowing count, a wrong size or an
// unknown subdirectory is an error wrapping ErrInvalid. On success d is
// known.
func (m *TreeMeter) Add(d Digest, dir *Directory) (TreeStats, error) {
	st, err := m.combine(dir, func(e DirectoryEntry) (TreeStats, error) {
		c, ok := m.known[e.Digest]
		if !ok {
			return c, fmt.Errorf("%w: directory %s, entry %q: directory %s is not measured", ErrInvalid, d, e.Name, e.Digest)
		}
		return c, nil
	})
	if err != nil {
		return st, fmt.Errorf("directory %s: %w", d, err)
	}
	m.known[d] = st
	return st, nil
}

// combine computes a directory's stats from its children's, checking
// sizes, overflow and limits.
func (m *TreeMeter) combine(dir *Directory, child func(DirectoryEntry) (TreeStats, error)) (TreeStats, error) {
	var st TreeStats
	st.Entries = uint64(len(dir.Directories)) + uint64(len(dir.Files)) + uint64(len(dir.Symlinks))
	st.Depth = 1
	over := false
	for _, e := range dir.Directories {
		c, err := child(e)
		if err != nil {
			return st, err
		}
		if c.Entries != e.Size {
			return st, fmt.Errorf("%w: entry %q: size %d, the directory has %d entries below it", ErrInvalid, e.Name, e.Size, c.Entries)
		}
		var carry uint64
		st.Entries, carry = bits.Add64(st.Entries, c.Entries, 0)
		over = over || carry != 0
		st.FileBytes, carry = bits.Add64(st.FileBytes, c.FileBytes, 0)
		over = over || carry != 0
		st.Depth = max(st.Depth, c.Depth+1)
	}
	for _, e := range dir.Files {
		var carry uint64
		st.FileBytes, carry = bits.Add64(st.FileBytes, e.Size, 0)
		over = over || carry != 0
	}
	switch l := m.limits; {
	case over:
		return st, fmt.Errorf("%w: the expanded tree overflows 64-bit entry or byte counts", ErrInvalid)
	case st.Entries > l.MaxEntries:
		return st, fmt.Errorf("%w: the expanded tree has %d entries, limit %d", ErrInvalid, st.Entries, l.MaxEntries)
	case st.FileBytes > l.MaxFileBytes:
		return st, fmt.Errorf("%w: the expanded tree has %d bytes of files, limit %d", ErrInvalid, st.FileBytes, l.MaxFileBytes)
	case st.Depth > l.MaxDepth:
		return st, fmt.Errorf("%w: the tree nests directories %d deep, limit %d", ErrInvalid, st.Depth, l.MaxDepth)
	}
	return st, nil
}

// Measure measures the stored tree at root, reading from s each directory
// the meter does not know yet, once, and checking the root entry's size.
// Its cost is linear in the distinct directories, whatever the expanded
// size. A tree over a limit, or whose sizes are wrong, is an error
// wrapping ErrInvalid; a missing directory wraps ErrNotFound; a cycle
// (which only a corrupt store could hold) wraps ErrCorrupt.
func (m *TreeMeter) Measure(ctx context.Context, s DirectoryReader, root Entry) (TreeStats, error) {
	switch root.Kind {
	case KindFile:
		if root.Size > m.limits.MaxFileBytes {
			return TreeStats{}, fmt.Errorf("%w: file of %d bytes, limit %d", ErrInvalid, root.Size, m.limits.MaxFileBytes)
		}
		return TreeStats{FileBytes: root.Size}, nil
	case KindSymlink:
		return TreeStats{}, nil
	case KindDirectory:
	default:
		return TreeStats{}, fmt.Errorf("%w: root entry of %v", ErrInvalid, root.Kind)
	}
	// Post-order walk with an explicit stack: a directory is combined once
	// all its subdirectories are known.
	type frame struct {
		d    Digest
		dir  *Directory
		next int // index of the next subdirectory to look at
	}
	onStack := map[Digest]bool{}
	var stack []frame
	push := func(d Digest) error {
		if onStack[d] {
			return fmt.Errorf("%w: directory %s contains itself", ErrCorrupt, d)
		}
		if len(stack) >= m.limits.MaxDepth {
			return fmt.Errorf("%w: the tree nests directories more than %d deep", ErrInvalid, m.limits.MaxDepth)
		}
		dir, err := s.GetDirectory(ctx, d)
		if err != nil {
			return fmt.Errorf("castore: measuring the tree of %s: %w", root.Digest, err)
		}
		onStack[d] = true
		stack = append(stack, frame{d: d, dir: dir})
		return nil
	}
	if _, ok := m.known[root.Digest]; !ok {
		if err := push(root.Digest); err != nil {
			return TreeStats{}, err
		}
	}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return TreeStats{}, err
		}
		top := &stack[len(stack)-1]
		pending := false
		for top.next < len(top.dir.Directories) && !pending {
			e := top.dir.Directories[top.next]
			top.next++
			if _, ok := m.known[e.Digest]; !ok {
				if err := push(e.Digest); err != nil {
					return TreeStats{}, err
				}
				pending = true
			}
		}
		if pending {
			continue
		}
		if _, err := m.Add(top.d, top.dir); err != nil {
			return TreeStats{}, err
		}
		delete(onStack, top.d)
		stack = stack[:len(stack)-1]
	}
	st := m.known[root.Digest]
	if st.Entries != root.Size {
		return st, fmt.Errorf("%w: root directory %s: size %d, the directory has %d entries below it", ErrInvalid, root.Digest, root.Size, st.Entries)
	}
	return st, nil
}

// MeasureTree measures the stored tree at root against l with a fresh
// [TreeMeter].
func MeasureTree(ctx context.Context, s DirectoryReader, root Entry, l TreeLimits) (TreeStats, error) {
	return NewTreeMeter(l).Measure(ctx, s, root)
}
