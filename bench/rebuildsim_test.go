package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

var refPattern = regexp.MustCompile(`/nix/store/[0-9a-df-np-sv-z]{32}-`)

func TestRefLen(t *testing.T) {
	if refLen != len(storeDirPrefix)+refHashLen+1 {
		t.Fatalf("refLen %d", refLen)
	}
	for _, h := range injectedHashes {
		if !isRef([]byte(storeDirPrefix + h + "-")) {
			t.Errorf("injected hash %q does not make a reference", h)
		}
	}
	if s := minInjectSize(); s/8+refLen > s || (s-1)/8+refLen <= s-1 {
		t.Errorf("minInjectSize %d", s)
	}
}

// rewrite reads a NAR through a rewriter, a byte at a time or at once.
func rewrite(t *testing.T, nar []byte, inject []injection, rebuild int, oneByte bool) []byte {
	t.Helper()
	var src io.Reader = bytes.NewReader(nar)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	out, err := io.ReadAll(newRefRewriter(src, inject, rebuild))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkNAR parses a NAR and returns the contents of its regular files.
func checkNAR(t *testing.T, nar []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	nr := narrender.NewReader(bytes.NewReader(nar))
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Type {
		case narrender.TypeRegular:
			b, err := io.ReadAll(nr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Path()] = b
		case narrender.TypeSymlink:
			files[h.Path()] = []byte(h.Target)
		}
	}
}

// TestRefInjection: a tree without references gets one an eighth into
// each file and one per further MiB, in place; nothing else changes.
func TestRefInjection(t *testing.T) {
	same := testtree.Random(3, 5000)
	tree := testtree.Dir(testtree.Entries{
		"tiny":  testtree.File(testtree.Text("too small for a reference\n")),
		"min":   testtree.File(testtree.Random(1, int64(minInjectSize()))),
		"below": testtree.File(testtree.Random(1, int64(minInjectSize())-1)),
		"a":     testtree.File(same),
		"b":     testtree.Exec(same),
		"big":   testtree.File(testtree.Mixed(2, 4<<20+100)),
		"link":  testtree.Link("a"),
	})
	nar := narOf(t, tree)
	plan, err := planRefs(bytes.NewReader(nar))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Refs != 0 {
		t.Fatalf("%d references found in a tree without any", plan.Refs)
	}
	// big: at size/8 and three more MiB; a, b, min: one each.
	if len(plan.Inject) != 4+3 {
		t.Fatalf("%d injections: %+v", len(plan.Inject), plan.Inject)
	}
	orig := checkNAR(t, nar)
	for _, oneByte := range []bool{false, true} {
		out := rewrite(t, nar, plan.Inject, 0, oneByte)
		if len(out) != len(nar) {
			t.Fatalf("rewritten NAR has %d bytes, want %d", len(out), len(nar))
		}
		files := checkNAR(t, out)
		for path, b := range files {
			o := orig[path]
			size := uint64(len(o))
			var want []byte
			if path != "link" {
				want = bytes.Clone(o)
				k := 0
				for off := size / 8; off+refLen <= size; off += refInjectionSpacing {
					copy(want[off:], storeDirPrefix+injectedHashes[k%len(injectedHashes)]+"-")
					k++
				}
			} else {
				want = o
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s: injected content differs from the expected one", path)
			}
		}
		if !bytes.Equal(files["a"], files["b"]) {
			t.Error("two files of the same content differ after injection")
		}
		if n := len(refPattern.FindAll(out, -1)); n != len(plan.Inject) {
			t.Errorf("%d references in the output, want %d", n, len(plan.Inject))
		}
		if rw := newRefRewriter(bytes.NewReader(out), nil, 0); func() int { io.Copy(io.Discard, rw); return rw.Refs() }() != len(plan.Inject) {
			t.Error("rewriter counts the injected references wrongly")
		}
	}
}

// TestRefRebuild: every reference of a NAR, wherever it falls relative to
// the rewriter's buffer, gets a new hash; the same old hash always gets the
// same new one; other bytes, and near-references, stay as they are.
func TestRefRebuild(t *testing.T) {
	dep := "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-"
	other := "/nix/store/a4vqz1m1pgqw9v5a0zqh7gj6kv3k7mlm-"
	var big bytes.Buffer
	big.Write(bytes.Repeat([]byte{'x'}, 256<<10-20)) // a reference across the first buffer boundary
	big.WriteString(dep + "glibc-2.40/lib/ld.so\x00")
	for big.Len() < 600<<10 {
		big.WriteString("padding " + other + "bash/bin/sh ")
	}
	near := "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7e- /nix/store/short- /nix/store/0C6KZPH7L0DCBFMJAP64F0CZDAFN3B7X- " +
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x_"
	tree := testtree.Dir(testtree.Entries{
		"big":  testtree.File(testtree.Bytes(big.Bytes())),
		"end":  testtree.File(testtree.Text("ends with a reference " + dep)),
		"near": testtree.File(testtree.Text(near)),
		"ln":   testtree.Link(dep + "glibc-2.40/lib"),
	})
	nar := narOf(t, tree)
	plan, err := planRefs(bytes.NewReader(nar))
	if err != nil {
		t.Fatal(err)
	}
	refs := len(refPattern.FindAll(nar, -1))
	if plan.Refs != refs || plan.Inject != nil {
		t.Fatalf("plan %d references and %d injections, want %d references", plan.Refs, len(plan.Inject), refs)
	}
	if out := rewrite(t, nar, nil, 0, false); !bytes.Equal(out, nar) {
		t.Fatal("rebuild 0 without injections changed the NAR")
	}
	newDep := storeDirPrefix + rebuiltHash([]byte(dep[11:43]), 1) + "-"
	newOther := storeDirPrefix + rebuiltHash([]byte(other[11:43]), 1) + "-"
	want := bytes.ReplaceAll(bytes.ReplaceAll(nar, []byte(dep), []byte(newDep)), []byte(other), []byte(newOther))
	for _, oneByte := range []bool{false, true} {
		out := rewrite(t, nar, nil, 1, oneByte)
		if !bytes.Equal(out, want) {
			t.Fatalf("rebuild 1 (one byte at a time: %v) differs from replacing each reference", oneByte)
		}
		files := checkNAR(t, out)
		if string(files["near"]) != near {
			t.Errorf("near-references changed: %q", files["near"])
		}
		if !strings.HasPrefix(string(files["ln"]), newDep) {
			t.Errorf("symlink target %q", files["ln"])
		}
	}
	if out := rewrite(t, nar, nil, 2, false); bytes.Equal(out, want) || len(out) != len(nar) {
		t.Error("rebuild 2 is the same as rebuild 1")
	}
}

func TestFanout(t *testing.T) {
	data := make([]byte, 5<<20+123)
	for i := range data {
		data[i] = byte(i * 7 >> 3)
	}
	f := newFanout(context.Background(), bytes.NewReader(data), 4, 64<<10, 3)
	got := make([][]byte, 4)
	var wg sync.WaitGroup
	for i, r := range f.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			switch i {
			case 0: // stops early: must not hold up the others
				io.CopyN(io.Discard, r, 100)
			case 1:
				got[i], _ = io.ReadAll(iotest.OneByteReader(r))
			default:
				var b bytes.Buffer
				r.WriteTo(&b)
				got[i] = b.Bytes()
			}
		}()
	}
	wg.Wait()
	for i := 1; i < 4; i++ {
		if !bytes.Equal(got[i], data) {
			t.Errorf("reader %d got %d bytes, want the %d of the source", i, len(got[i]), len(data))
		}
	}

	boom := errors.New("boom")
	f = newFanout(context.Background(), io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(boom)), 2, 256, 2)
	errs := make([]error, len(f.readers))
	for i, r := range f.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = io.ReadAll(r)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("read error %v, want %v", err, boom)
		}
	}
}
