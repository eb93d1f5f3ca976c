package testtree

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestEdgeCasesValid(t *testing.T) {
	seen := map[string]bool{}
	for _, tree := range EdgeCases() {
		if seen[tree.Name] {
			t.Errorf("duplicate tree name %q", tree.Name)
		}
		seen[tree.Name] = true
		if err := tree.Root.Validate(); err != nil {
			t.Errorf("%s: %v", tree.Name, err)
		}
	}
}

// TestBuildRoundTrip builds every tree and reads it back from disk, checking
// that the files, modes and symlinks on disk serialise to the same NAR as the
// specification.
func TestBuildRoundTrip(t *testing.T) {
	for _, tree := range EdgeCases() {
		t.Run(tree.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "root")
			Build(t, path, tree.Root)
			got, err := readBack(path)
			if err != nil {
				t.Fatal(err)
			}
			want := narBytes(t, tree.Root)
			if have := narBytes(t, got); !bytes.Equal(have, want) {
				t.Fatalf("tree on disk serialises to %d bytes, spec to %d bytes (first difference at %d)",
					len(have), len(want), firstDiff(have, want))
			}
		})
	}
}

// TestWriteNARMatchesNix checks WriteNAR against the reference
// implementation: `nix-store --dump` of the built tree, and `nix-hash` of it.
func TestWriteNARMatchesNix(t *testing.T) {
	requireNix(t)
	for _, tree := range EdgeCases() {
		t.Run(tree.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "root")
			Build(t, path, tree.Root)
			if !tree.Root.FitsPathMax(path) {
				if tree.Name != "long-path" {
					t.Fatalf("tree unexpectedly exceeds PATH_MAX")
				}
				if err := exec.Command("nix-store", "--dump", path).Run(); err == nil {
					t.Fatalf("nix-store --dump accepted a path beyond PATH_MAX; use it as the reference instead")
				}
				return
			}
			out, err := exec.Command("nix-store", "--dump", path).Output()
			if err != nil {
				t.Fatalf("nix-store --dump: %v: %s", err, stderrOf(err))
			}
			want := narBytes(t, tree.Root)
			if !bytes.Equal(out, want) {
				t.Fatalf("nix-store --dump gave %d bytes, WriteNAR %d bytes (first difference at %d)",
					len(out), len(want), firstDiff(out, want))
			}
		})
	}
}

func TestContentDeterministic(t *testing.T) {
	base := Random(7, 100_000)
	contents := map[string]Content{
		"empty":        Empty(),
		"text":         Text("hello\n"),
		"random":       Random(7, 100_003),
		"mixed":        Mixed(7, 1<<20+1),
		"insert-start": Insert(base, 0, []byte("xyz")),
		"insert-mid":   Insert(base, 50_000, []byte("xyz")),
		"insert-end":   Insert(base, 100_000, []byte("xyz")),
	}
	for name, c := range contents {
		a, b := readAll(t, c), readAll(t, c)
		if int64(len(a)) != c.Size() {
			t.Errorf("%s: produced %d bytes, Size() = %d", name, len(a), c.Size())
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two reads differ", name)
		}
	}

	b := readAll(t, base)
	mid := readAll(t, contents["insert-mid"])
	want := append(append(append([]byte{}, b[:50_000]...), "xyz"...), b[50_000:]...)
	if !bytes.Equal(mid, want) {
		t.Errorf("Insert did not insert in the middle")
	}
	if bytes.Equal(readAll(t, Random(1, 4096)), readAll(t, Random(2, 4096))) {
		t.Errorf("different seeds give the same random content")
	}
	if !bytes.HasPrefix(readAll(t, Random(9, 5000)), readAll(t, Random(9, 4000))) {
		t.Errorf("same seed with a shorter size is not a prefix")
	}
}

func TestMixedIsPartlyCompressible(t *testing.T) {
	if ratio := compressRatio(readAll(t, Mixed(11, 8<<20))); ratio < 0.2 || ratio > 0.85 {
		t.Errorf("mixed content compresses to %.2f of its size; want a mix of text and random data", ratio)
	}
	if r := compressRatio(readAll(t, Random(11, 1<<20))); r < 0.99 {
		t.Errorf("random content compresses to %.2f of its size", r)
	}
}

func compressRatio(data []byte) float64 {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	w.Write(data)
	w.Close()
	return float64(buf.Len()) / float64(len(data))
}

func TestDedupAccounting(t *testing.T) {
	root := Dedup().Root
	small := int64(len("the same small file at several paths\n"))
	wantTotal := 4*DedupBlobSize + 5*small + 1<<20 + (1<<20 + 20)
	wantDistinct := DedupBlobSize + small + 1<<20 + (1<<20 + 20)
	if got := root.FileBytes(); got != wantTotal {
		t.Errorf("FileBytes = %d, want %d", got, wantTotal)
	}
	got, err := root.DistinctFileBytes()
	if err != nil {
		t.Fatal(err)
	}
	if got != wantDistinct {
		t.Errorf("DistinctFileBytes = %d, want %d", got, wantDistinct)
	}
}

func TestDescendants(t *testing.T) {
	root := Dir(Entries{
		"test":   Dir(Entries{"tested": Dir(nil)}),
		"tested": Dir(nil),
	})
	if got := root.Descendants(); got != 3 {
		t.Errorf("Descendants = %d, want 3", got)
	}
	if got := File(Empty()).Descendants(); got != 0 {
		t.Errorf("Descendants of a file = %d, want 0", got)
	}
}

func TestBigNAR(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 300 MiB")
	}
	big := Big().Root
	if got := big.FileBytes(); got < 256<<20 {
		t.Fatalf("big tree holds only %d bytes", got)
	}
	h := sha256.New()
	cw := &countWriter{w: h}
	if err := WriteNAR(cw, big); err != nil {
		t.Fatal(err)
	}
	if cw.n < BigFileSize || cw.n%8 != 0 {
		t.Fatalf("NAR of big tree is %d bytes", cw.n)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func requireNix(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nix-store"); err != nil {
		if testing.Short() {
			t.Skip("nix-store not installed")
		}
		t.Fatal("nix-store not found in PATH; run scripts/test-deps.sh")
	}
}

func stderrOf(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

func narBytes(t *testing.T, n *Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteNAR(&buf, n); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(t *testing.T, c Content) []byte {
	t.Helper()
	b, err := io.ReadAll(c.Open())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// readBack reconstructs a Node from the file system, walking directories
// through open handles so that paths beyond PATH_MAX are readable.
func readBack(path string) (*Node, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(path)
		return &Node{Type: Regular, Content: Bytes(data), Executable: fi.Mode()&0o100 != 0}, err
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		return Link(target), err
	}
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return readBackDir(root)
}

func readBackDir(root *os.Root) (*Node, error) {
	d, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	n := Dir(Entries{})
	for _, ent := range ents {
		name := ent.Name()
		fi, err := root.Lstat(name)
		if err != nil {
			return nil, err
		}
		switch {
		case fi.Mode().IsRegular():
			data, err := root.ReadFile(name)
			if err != nil {
				return nil, err
			}
			n.Entries[name] = &Node{Type: Regular, Content: Bytes(data), Executable: fi.Mode()&0o100 != 0}
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := root.Readlink(name)
			if err != nil {
				return nil, err
			}
			n.Entries[name] = Link(target)
		case fi.IsDir():
			sub, err := root.OpenRoot(name)
			if err != nil {
				return nil, err
			}
			child, err := readBackDir(sub)
			sub.Close()
			if err != nil {
				return nil, err
			}
			n.Entries[name] = child
		}
	}
	return n, nil
}
