package narrender_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// refsDir holds NARs with the root digests and NAR hashes the snix/tvix
// implementation computes for them.
const refsDir = "../cmd/nixcas/testdata/tvix"

type ref struct {
	NAR        string `json:"nar"`
	Type       string `json:"type"`
	Digest     string `json:"digest"`
	Size       uint64 `json:"size"`
	Executable bool   `json:"executable"`
	Target     string `json:"target"`
	NARSha256  string `json:"narSha256"`
	NARSize    uint64 `json:"narSize"`
}

func readRefs(t *testing.T) []ref {
	f, err := os.Open(filepath.Join(refsDir, "refs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var refs []ref
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r ref
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if len(refs) == 0 {
		t.Fatal("no reference NARs")
	}
	return refs
}

func TestReferenceNARs(t *testing.T) {
	ctx := context.Background()
	for _, r := range readRefs(t) {
		t.Run(r.NAR, func(t *testing.T) {
			nar, err := os.ReadFile(filepath.Join(refsDir, r.NAR))
			if err != nil {
				t.Fatal(err)
			}
			s := new(castore.MemoryStore)
			res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(res.NARSha256[:]); got != r.NARSha256 {
				t.Errorf("NAR sha256 %s, want %s", got, r.NARSha256)
			}
			if res.NARSize != r.NARSize {
				t.Errorf("NAR size %d, want %d", res.NARSize, r.NARSize)
			}
			e := res.Root
			switch r.Type {
			case "directory", "file":
				if e.Digest.String() != r.Digest || e.Size != r.Size || e.Executable != r.Executable {
					t.Errorf("root %v %s size %d exec %v, want %s size %d exec %v", e.Kind, e.Digest, e.Size, e.Executable, r.Digest, r.Size, r.Executable)
				}
			case "symlink":
				if e.Kind != castore.KindSymlink || e.Target != r.Target {
					t.Errorf("root %v -> %q, want symlink -> %q", e.Kind, e.Target, r.Target)
				}
			}
			if e.Kind.String() != r.Type {
				t.Errorf("root kind %v, want %s", e.Kind, r.Type)
			}
			var out bytes.Buffer
			if err := narrender.Render(ctx, &out, s, e); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), nar) {
				t.Errorf("rendered %d bytes differ from the %d ingested", out.Len(), len(nar))
			}
		})
	}
}
