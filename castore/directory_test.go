package castore_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
)

var (
	d1 = castore.Hash([]byte("1"))
	d2 = castore.Hash([]byte("2"))
)

func TestEmptyDirectoryDigest(t *testing.T) {
	const want = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := (&castore.Directory{}).Digest().String(); got != want {
		t.Errorf("empty directory digest %s, want %s", got, want)
	}
}

func TestDirectoryValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  castore.Directory
		ok   bool
	}{
		{"empty", castore.Directory{}, true},
		{"one of each", castore.Directory{
			Directories: []castore.DirectoryEntry{{Name: "a", Digest: d1, Size: 3}},
			Files:       []castore.FileEntry{{Name: "b", Digest: d2, Size: 1, Executable: true}},
			Symlinks:    []castore.SymlinkEntry{{Name: "c", Target: "/nix/store/x"}},
		}, true},
		{"255-byte name", castore.Directory{Files: []castore.FileEntry{{Name: strings.Repeat("n", 255)}}}, true},
		{"unicode", castore.Directory{Files: []castore.FileEntry{{Name: "é"}, {Name: "\xff"}}}, true},
		{"empty name", castore.Directory{Files: []castore.FileEntry{{Name: ""}}}, false},
		{"dot", castore.Directory{Files: []castore.FileEntry{{Name: "."}}}, false},
		{"dotdot", castore.Directory{Directories: []castore.DirectoryEntry{{Name: ".."}}}, false},
		{"slash", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a/b", Target: "x"}}}, false},
		{"nul", castore.Directory{Files: []castore.FileEntry{{Name: "a\x00"}}}, false},
		{"256-byte name", castore.Directory{Files: []castore.FileEntry{{Name: strings.Repeat("n", 256)}}}, false},
		{"unsorted", castore.Directory{Files: []castore.FileEntry{{Name: "b"}, {Name: "a"}}}, false},
		{"duplicate in list", castore.Directory{Files: []castore.FileEntry{{Name: "a"}, {Name: "a"}}}, false},
		{"duplicate across lists", castore.Directory{
			Directories: []castore.DirectoryEntry{{Name: "a"}},
			Symlinks:    []castore.SymlinkEntry{{Name: "a", Target: "x"}},
		}, false},
		{"empty target", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a"}}}, false},
		{"nul in target", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a", Target: "x\x00"}}}, false},
		{"4096-byte target", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a", Target: strings.Repeat("t", 4096)}}}, false},
	} {
		err := tc.dir.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("%s: error %v does not wrap ErrInvalid", tc.name, err)
		}
	}
}

// checkAgainstProto compares Marshal with the protobuf library's
// deterministic encoding of the same directory, and the sizes.
func checkAgainstProto(t *testing.T, d *castore.Directory) {
	t.Helper()
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(castore.DirectoryToProto(d))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("Marshal = %x, protobuf encodes %x", got, want)
	}
}

func TestDirectoryEncoding(t *testing.T) {
	d := &castore.Directory{
		Directories: []castore.DirectoryEntry{{Name: "a", Digest: d1, Size: 300}, {Name: "z", Digest: d2}},
		Files:       []castore.FileEntry{{Name: "b", Digest: d2, Size: 1 << 40, Executable: true}, {Name: "e", Digest: d1}},
		Symlinks:    []castore.SymlinkEntry{{Name: "c", Target: "../x"}},
	}
	checkAgainstProto(t, d)
	back, err := castore.UnmarshalDirectory(d.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != d.Digest() || back.Size() != 2+2+1+300 {
		t.Errorf("round trip: digest %s size %d, want %s %d", back.Digest(), back.Size(), d.Digest(), 305)
	}
}

// FuzzDirectory: whatever bytes arrive, decoding either fails or gives a
// directory that, when valid, re-encodes as the protobuf library would and
// decodes to the same thing; validation never panics.
func FuzzDirectory(f *testing.F) {
	f.Add((&castore.Directory{}).Marshal())
	f.Add((&castore.Directory{
		Directories: []castore.DirectoryEntry{{Name: "a", Digest: d1, Size: 3}},
		Files:       []castore.FileEntry{{Name: "b", Digest: d2, Size: 1, Executable: true}},
		Symlinks:    []castore.SymlinkEntry{{Name: "c", Target: "/nix/store/x"}},
	}).Marshal())
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := castore.UnmarshalDirectory(b)
		if err != nil {
			if !errors.Is(err, castore.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// The protobuf library must read the same bytes the same way.
		var p castorepb.Directory
		if err := proto.Unmarshal(b, &p); err != nil {
			t.Fatalf("castore decoded what protobuf refuses: %v", err)
		}
		if err := d.Validate(); err != nil {
			return
		}
		checkAgainstProto(t, d)
		again, err := castore.UnmarshalDirectory(d.Marshal())
		if err != nil || again.Digest() != d.Digest() {
			t.Fatalf("re-encoding does not round trip: %v", err)
		}
	})
}
