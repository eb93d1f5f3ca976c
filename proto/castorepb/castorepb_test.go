package castorepb_test

import (
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/proto"
	"lukechampine.com/blake3"

	"github.com/nixcas/nixcas/proto/castorepb"
)

// emptyDirectoryDigest is the snix castore digest of the empty Directory.
const emptyDirectoryDigest = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

var deterministic = proto.MarshalOptions{Deterministic: true}

func TestEmptyDirectoryDigest(t *testing.T) {
	b, err := deterministic.Marshal(&castorepb.Directory{})
	if err != nil {
		t.Fatal(err)
	}
	sum := blake3.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != emptyDirectoryDigest {
		t.Fatalf("empty Directory digest = %s, want %s", got, emptyDirectoryDigest)
	}
}

// TestWireBytes pins field numbers and wire types against a hand-encoded
// Directory{files: [{name: "a", size: 1, executable: true}]}.
func TestWireBytes(t *testing.T) {
	b, err := deterministic.Marshal(&castorepb.Directory{
		Files: []*castorepb.FileEntry{{Name: []byte("a"), Size: 1, Executable: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = "12070a016118012001"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding = %s, want %s", got, want)
	}
}

func TestDirectoryRoundTrip(t *testing.T) {
	digest := func(s string) []byte {
		sum := blake3.Sum256([]byte(s))
		return sum[:]
	}
	dir := &castorepb.Directory{
		Directories: []*castorepb.DirectoryEntry{
			{Name: []byte("bin"), Digest: digest("dir"), Size: 3},
		},
		Files: []*castorepb.FileEntry{
			{Name: []byte("hello"), Digest: digest("file"), Size: 42, Executable: true},
		},
		Symlinks: []*castorepb.SymlinkEntry{
			{Name: []byte("link"), Target: []byte("../target")},
		},
	}

	b, err := deterministic.Marshal(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got castorepb.Directory
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(dir, &got) {
		t.Fatalf("round trip mismatch:\n got %v\nwant %v", &got, dir)
	}
	b2, err := deterministic.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(b2) != hex.EncodeToString(b) {
		t.Fatalf("re-encoding differs:\n got %x\nwant %x", b2, b)
	}

	// Each kind also round trips as a standalone Entry.
	for _, e := range []*castorepb.Entry{
		{Entry: &castorepb.Entry_Directory{Directory: dir.Directories[0]}},
		{Entry: &castorepb.Entry_File{File: dir.Files[0]}},
		{Entry: &castorepb.Entry_Symlink{Symlink: dir.Symlinks[0]}},
	} {
		b, err := deterministic.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var got castorepb.Entry
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(e, &got) {
			t.Fatalf("Entry round trip mismatch: got %v, want %v", &got, e)
		}
	}
}
