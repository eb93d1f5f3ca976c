package httpcache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server/httpcache"
)

// sendfileNAR is the NAR of a tree of large files (several chunks each)
// and small ones.
func sendfileNAR(t *testing.T) []byte {
	t.Helper()
	tree := testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{
			"tool": testtree.Exec(testtree.Random(7, 2<<20+77)),
			"sh":   testtree.Link("tool"),
		}),
		"lib":   testtree.File(testtree.Mixed(8, 1<<20)),
		"mid":   testtree.File(testtree.Random(9, 50<<10)),
		"small": testtree.File(testtree.Text("small\n")),
	})
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, tree); err != nil {
		t.Fatal(err)
	}
	return nar.Bytes()
}

// getRange GETs url with the Range header rng (none when empty) and
// returns the body, failing unless the status is want.
func getRange(t *testing.T, url, rng string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != want {
		t.Fatalf("GET %s (Range %q): %s, %d bytes, %v; want %d", url, rng, resp.Status, len(body), err, want)
	}
	return body
}

// TestWarmNARSendsFiles: through the real handler on a TCP connection, a
// warm NAR response sends the chunks of large files from the decoded
// frames on disk (the server's http.ResponseWriter does it with
// sendfile), and its bytes are the NAR's, whole and in ranges; a
// compaction that retires every frame between two responses leaves them
// exact (fresh places, new decoded files); a .nar.zst response is
// compressed from read chunks and decompresses to the NAR.
func TestWarmNARSendsFiles(t *testing.T) {
	nar := sendfileNAR(t)
	w := newWarmServer(t, nar, httpcache.Options{})
	size := len(nar)
	check := func(when string) {
		t.Helper()
		if got := getRange(t, w.url, "", http.StatusOK); !bytes.Equal(got, nar) {
			t.Fatalf("%s: GET of the NAR gave %d bytes that differ from its %d", when, len(got), size)
		}
		for _, r := range [][2]int{{0, 99}, {300, 200 << 10}, {1 << 20, 2<<20 + 5}, {size - 70<<10, size - 1}} {
			got := getRange(t, w.url, fmt.Sprintf("bytes=%d-%d", r[0], r[1]), http.StatusPartialContent)
			if !bytes.Equal(got, nar[r[0]:r[1]+1]) {
				t.Fatalf("%s: range %d-%d: %d bytes differ from the NAR's", when, r[0], r[1], len(got))
			}
		}
	}
	check("warm")
	st := w.store.DecodedCacheStats()
	if st.Sent == 0 || st.Misses != 0 {
		t.Fatalf("decoded cache after warm responses: %+v; want chunks sent from files, no frame decoded", st)
	}

	// Every frame retired between two responses.
	res, err := w.store.Compact(context.Background(), pebblestore.CompactOptions{Full: true})
	if err != nil || res.FramesDeleted == 0 {
		t.Fatalf("compaction: %+v, %v; want frames retired", res, err)
	}
	check("after a compaction")
	check("after a compaction, again")
	if got := w.store.DecodedCacheStats(); got.Sent <= st.Sent {
		t.Fatalf("decoded cache after the compaction: %+v; want chunks sent from the new frames' files", got)
	}

	// Compressed on the fly: nothing to send from a file.
	z := newWarmServer(t, nar, httpcache.Options{Compression: "zstd"})
	body := getRange(t, z.url+".zst", "", http.StatusOK)
	plain, err := zstdDecode(body)
	if err != nil || !bytes.Equal(plain, nar) {
		t.Fatalf(".nar.zst: %d bytes decompressed, %v; want the NAR", len(plain), err)
	}
	if st := z.store.DecodedCacheStats(); st.Sent != 0 || st.Hits == 0 {
		t.Fatalf("decoded cache after a .nar.zst response: %+v; want chunks read, none sent from a file", st)
	}
}

// TestWarmNARDamagedDecodedFile: decoded files damaged while the server
// was down are checked whole and dropped before anything is sent from
// them, and the response is the NAR, from the frames.
func TestWarmNARDamagedDecodedFile(t *testing.T) {
	nar := sendfileNAR(t)
	w := newWarmServer(t, nar, httpcache.Options{})
	w.store.Close()
	var files []string
	err := filepath.WalkDir(filepath.Join(w.dir, "decoded"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("decoded files %v, %v", files, err)
	}
	for i, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 2 {
		case 0: // a byte changed
			b[len(b)/2] ^= 1
		case 1: // cut short
			b = b[:len(b)/2]
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w.open(t, nar, httpcache.Options{})
	if got := getRange(t, w.url, "", http.StatusOK); !bytes.Equal(got, nar) {
		t.Fatalf("GET over damaged decoded files: %d bytes differ from the NAR's %d", len(got), len(nar))
	}
	if st := w.store.DecodedCacheStats(); st.Damaged != uint64(len(files)) {
		t.Fatalf("decoded cache %+v; want the %d damaged files dropped", st, len(files))
	}
}

// zstdDecode decompresses a zstd stream.
func zstdDecode(b []byte) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}
