package castore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// dagLevels returns the directories of a DAG of the given depth, leaves
// first: the bottom directory holds one file of fileSize bytes, each one
// above names the one below twice ("a" and "b"), and sizes are computed as
// an uploader would, wrapping silently. The last directory is the root.
func dagLevels(depth int, fileSize uint64) []*castore.Directory {
	bottom := &castore.Directory{Files: []castore.FileEntry{{Name: "f", Digest: castore.Hash([]byte("f")), Size: fileSize}}}
	dirs := []*castore.Directory{bottom}
	for len(dirs) < depth {
		c := dirs[len(dirs)-1]
		d, size := c.Digest(), c.Size()
		dirs = append(dirs, &castore.Directory{Directories: []castore.DirectoryEntry{
			{Name: "a", Digest: d, Size: size}, {Name: "b", Digest: d, Size: size},
		}})
	}
	return dirs
}

// chainLevels returns depth directories each naming the next one, leaves
// first.
func chainLevels(depth int) []*castore.Directory {
	dirs := []*castore.Directory{{}}
	for len(dirs) < depth {
		c := dirs[len(dirs)-1]
		dirs = append(dirs, &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "d", Digest: c.Digest(), Size: c.Size()}}})
	}
	return dirs
}

func rootOf(dirs []*castore.Directory) castore.Entry {
	r := dirs[len(dirs)-1]
	return castore.Entry{Kind: castore.KindDirectory, Digest: r.Digest(), Size: r.Size()}
}

func TestTreeMeter(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		dirs   []*castore.Directory
		limits castore.TreeLimits
		want   castore.TreeStats
		err    string // substring of the error; "" for success
	}{
		{"one empty directory", chainLevels(1), castore.TreeLimits{}, castore.TreeStats{Depth: 1}, ""},
		{"chain of 100", chainLevels(100), castore.TreeLimits{}, castore.TreeStats{Entries: 99, Depth: 100}, ""},
		{"chain at the default depth limit", chainLevels(castore.MaxDepth), castore.TreeLimits{}, castore.TreeStats{Entries: castore.MaxDepth - 1, Depth: castore.MaxDepth}, ""},
		{"chain over the default depth limit", chainLevels(castore.MaxDepth + 1), castore.TreeLimits{}, castore.TreeStats{}, fmt.Sprintf("more than %d deep", castore.MaxDepth)},
		{"chain over a set depth limit", chainLevels(11), castore.TreeLimits{MaxDepth: 10}, castore.TreeStats{}, "more than 10 deep"},
		{"DAG of depth 20", dagLevels(20, 3), castore.TreeLimits{}, castore.TreeStats{Entries: 1<<20 - 1 + 1<<19 - 1, FileBytes: 3 << 19, Depth: 20}, ""},
		{"DAG of depth 30 (over 10 million entries)", dagLevels(30, 1), castore.TreeLimits{}, castore.TreeStats{}, "entries, limit 10000000"},
		{"DAG of depth 64 (sizes wrap)", dagLevels(64, 1), castore.TreeLimits{MaxEntries: 1<<64 - 1, MaxFileBytes: 1<<64 - 1}, castore.TreeStats{}, "overflows"},
		{"DAG of 1 GiB files over a file-bytes limit", dagLevels(12, 1<<30), castore.TreeLimits{}, castore.TreeStats{}, "bytes of files, limit 1099511627776"},
		{"DAG within a raised file-bytes limit", dagLevels(12, 1<<30), castore.TreeLimits{MaxFileBytes: 1 << 41}, castore.TreeStats{Entries: 1<<12 - 1 + 1<<11 - 1, FileBytes: 1 << 41, Depth: 12}, ""},
		{"entries limit of 5", chainLevels(7), castore.TreeLimits{MaxEntries: 5}, castore.TreeStats{}, "6 entries, limit 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s castore.MemoryStore
			for _, d := range tc.dirs {
				if _, err := s.PutDirectory(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			got, err := castore.MeasureTree(ctx, &s, rootOf(tc.dirs), tc.limits)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("MeasureTree = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("MeasureTree = %+v, %v; want ErrInvalid with %q", got, err, tc.err)
			}
		})
	}
}

// TestTreeMeterAdd feeds directories leaves first, as a Put stream sends
// them, and checks the same limits apply.
func TestTreeMeterAdd(t *testing.T) {
	for _, tc := range []struct {
		name string
		dirs []*castore.Directory
		err  string
	}{
		{"chain", chainLevels(50), ""},
		{"DAG of depth 30", dagLevels(30, 1), "entries, limit 10000000"},
		{"DAG of depth 64", dagLevels(64, 0), "entries, limit 10000000"},
		{"deep chain", chainLevels(castore.MaxDepth + 1), fmt.Sprintf("%d deep, limit %d", castore.MaxDepth+1, castore.MaxDepth)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := castore.NewTreeMeter(castore.TreeLimits{})
			var err error
			for _, d := range tc.dirs {
				if _, err = m.Add(d.Digest(), d); err != nil {
					break
				}
			}
			if tc.err == "" && err != nil || tc.err != "" && (!errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Add: %v, want error containing %q", err, tc.err)
			}
		})
	}
	m := castore.NewTreeMeter(castore.TreeLimits{})
	dirs := chainLevels(2)
	if _, err := m.Add(dirs[1].Digest(), dirs[1]); !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), "not measured") {
		t.Errorf("Add of a directory naming an unknown one: %v", err)
	}
	wrong := &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "d", Digest: dirs[0].Digest(), Size: 7}}}
	m.Add(dirs[0].Digest(), dirs[0])
	if _, err := m.Add(wrong.Digest(), wrong); !errors.Is(err, castore.ErrInvalid) || !strings.Contains(err.Error(), "size 7") {
		t.Errorf("Add of a wrong size: %v", err)
	}
}

// cyclicStore answers every digest with a directory naming itself, as
// only a corrupt store could.
type cyclicStore struct{}

func (cyclicStore) GetDirectory(_ context.Context, d castore.Digest) (*castore.Directory, error) {
	return &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "loop", Digest: d}}}, nil
}

func (cyclicStore) PutDirectory(context.Context, *castore.Directory) (castore.Digest, error) {
	return castore.Digest{}, errors.New("read-only")
}

func TestTreeMeterCycle(t *testing.T) {
	root := castore.Entry{Kind: castore.KindDirectory, Digest: castore.Hash([]byte("x"))}
	_, err := castore.MeasureTree(context.Background(), cyclicStore{}, root, castore.TreeLimits{})
	if !errors.Is(err, castore.ErrCorrupt) {
		t.Fatalf("MeasureTree of a cycle: %v, want ErrCorrupt", err)
	}
}

func TestTreeMeterCanceled(t *testing.T) {
	var s castore.MemoryStore
	dirs := chainLevels(10)
	for _, d := range dirs {
		s.PutDirectory(context.Background(), d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := castore.MeasureTree(ctx, &s, rootOf(dirs), castore.TreeLimits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("MeasureTree with a canceled context: %v", err)
	}
}
