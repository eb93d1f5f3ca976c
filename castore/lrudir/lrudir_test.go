package lrudir_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/lrudir"
)

func valid(name string) bool { return len(name) == 4 && !strings.Contains(name, ".") }

func keep(t *testing.T, d *lrudir.Dir, name string, size int) bool {
	t.Helper()
	f, err := d.CreateTemp(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return d.Keep(name, f.Name(), int64(size))
}

func onDisk(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			names = append(names, e.Name())
		}
		return nil
	})
	slices.Sort(names)
	return names
}

// TestDir: files kept are indexed and on disk; the least recently used go
// first beyond the limit (Lookup counts as a use, Has does not); a second
// Keep of a name is refused; Drop spares a newer file of the same name;
// Open indexes what is there, removes temporary files and ignores names
// it is not given, and evicts down to a lower limit.
func TestDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache") // created by the first CreateTemp
	var evicted []string
	d, err := lrudir.Open(dir, 300, valid, func(name string) { evicted = append(evicted, name) })
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"aa01", "aa02", "bb03"} {
		if !keep(t, d, n, 100) {
			t.Fatalf("Keep(%s) refused", n)
		}
	}
	if keep(t, d, "aa02", 100) {
		t.Fatal("a second Keep of aa02 was taken")
	}
	if _, ok := d.Lookup("aa01"); !ok || !d.Has("aa02") {
		t.Fatal("files kept are not found")
	}
	keep(t, d, "bb04", 100) // evicts aa02: aa01 was used since
	if got, want := onDisk(t, dir), []string{"aa01", "bb03", "bb04"}; !slices.Equal(got, want) || !slices.Equal(evicted, []string{"aa02"}) {
		t.Fatalf("on disk %v (want %v), evicted %v", got, want, evicted)
	}
	if d.Used() != 300 || d.Len() != 3 {
		t.Fatalf("Used %d, Len %d", d.Used(), d.Len())
	}

	old, _ := d.Lookup("bb03")
	d.Remove("bb03")
	keep(t, d, "bb03", 50)
	d.Drop(old) // the file kept since is newer: it stays
	if e, ok := d.Lookup("bb03"); !ok || e.Size() != 50 {
		t.Fatalf("Drop of a replaced entry removed the new file: %v %v", e, ok)
	}

	// A crash's leftovers and files of other names.
	os.WriteFile(filepath.Join(dir, "aa", "aa05.tmp123"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(dir, "aa", "other.txt"), []byte("not ours"), 0o644)
	d2, err := lrudir.Open(dir, 160, valid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Used() > 160 || d2.Len() == 0 {
		t.Fatalf("reopened with a limit of 160: Used %d, Len %d", d2.Used(), d2.Len())
	}
	got := onDisk(t, dir)
	if slices.Contains(got, "aa05.tmp123") || !slices.Contains(got, "other.txt") {
		t.Fatalf("on disk after reopening: %v; want the temporary file gone, other.txt left", got)
	}

	if _, err := lrudir.Open(dir, 0, valid, nil); !errors.Is(err, castore.ErrInvalid) {
		t.Fatalf("Open with limit 0 = %v; want ErrInvalid", err)
	}
}
