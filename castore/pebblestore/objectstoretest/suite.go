package objectstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// LargeSize is the size of the object of the Large test: above the 5 MiB
// an S3 multipart part takes at least, so that a store whose part size is
// 5 MiB uploads it in three parts.
const LargeSize = 12<<20 + 12345

// Run runs the suite as subtests of t. open must return a new, empty
// store each time it is called.
func Run(t *testing.T, open func(t *testing.T) pebblestore.ObjectStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s pebblestore.ObjectStore)
	}{
		{"Missing", testMissing},
		{"RoundTrip", testRoundTrip},
		{"Ranges", testRanges},
		{"BeyondEnd", testBeyondEnd},
		{"PutTwice", testPutTwice},
		{"Delete", testDelete},
		{"List", testList},
		{"ListStops", testListStops},
		{"InvalidNames", testInvalidNames},
		{"ConcurrentSamePuts", testConcurrentSamePuts},
		{"ConcurrentReads", testConcurrentReads},
		{"Canceled", testCanceled},
		{"Large", testLarge},
		{"EmptyObject", testEmptyObject},
		{"Times", testTimes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// Object returns n pseudo-random bytes (from seed) and their name.
func Object(seed uint64, n int) (string, []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return castore.Hash(b).String(), b
}

// MustPut puts data under name, failing the test on error.
func MustPut(t testing.TB, s pebblestore.ObjectStore, name string, data []byte) {
	t.Helper()
	if err := s.PutObject(context.Background(), name, data); err != nil {
		t.Fatalf("PutObject %s (%d bytes): %v", name, len(data), err)
	}
}

// MustGet reads the whole object, failing the test on error.
func MustGet(t testing.TB, s pebblestore.ObjectStore, name string) []byte {
	t.Helper()
	b, err := s.GetObject(context.Background(), name, 0, -1, nil)
	if err != nil {
		t.Fatalf("GetObject %s: %v", name, err)
	}
	return b
}

func testMissing(t *testing.T, s pebblestore.ObjectStore) {
	ctx := context.Background()
	name, _ := Object(1, 10)
	for _, r := range [][2]int64{{0, -1}, {0, 5}, {3, 2}} {
		dst := []byte("keep")
		got, err := s.GetObject(ctx, name, r[0], r[1], dst)
		if !errors.Is(err, castore.ErrNotFound) {
			t.Errorf("GetObject(missing, %d, %d) = %v, want ErrNotFound", r[0], r[1], err)
		}
		if string(got) != "keep" {
			t.Errorf("GetObject(missing) changed dst to %q", got)
		}
	}
}

func testRoundTrip(t *testing.T, s pebblestore.ObjectStore) {
	for i, n := range []int{1, 100, 64 << 10, 1<<20 + 7} {
		name, data := Object(uint64(i), n)
		MustPut(t, s, name, data)
		if err := s.SyncObjects(context.Background()); err != nil {
			t.Fatalf("SyncObjects: %v", err)
		}
		if got := MustGet(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("object of %d bytes read back as %d bytes, differing", n, len(got))
		}
	}
}

func testRanges(t *testing.T, s pebblestore.ObjectStore) {
	ctx := context.Background()
	name, data := Object(2, 100_000)
	MustPut(t, s, name, data)
	for _, r := range []struct{ off, n int64 }{
		{0, -1}, {0, 1}, {0, 100_000}, {1, -1}, {99_999, -1}, {99_999, 1},
		{50_000, 10_000}, {12345, 54321}, {100_000, -1},
	} {
		dst := []byte("prefix")
		got, err := s.GetObject(ctx, name, r.off, r.n, dst)
		if err != nil {
			t.Errorf("GetObject(%d, %d): %v", r.off, r.n, err)
			continue
		}
		end := int64(len(data))
		if r.n >= 0 {
			end = r.off + r.n
		}
		want := append([]byte("prefix"), data[r.off:end]...)
		if !bytes.Equal(got, want) {
			t.Errorf("GetObject(%d, %d): %d bytes, want %d (prefix kept, then the range)", r.off, r.n, len(got), len(want))
		}
	}
}

func testBeyondEnd(t *testing.T, s pebblestore.ObjectStore) {
	ctx := context.Background()
	name, data := Object(3, 1000)
	MustPut(t, s, name, data)
	for _, r := range [][2]int64{{990, 20}, {1000, 1}, {2000, 10}, {1001, -1}} {
		dst := []byte("keep")
		got, err := s.GetObject(ctx, name, r[0], r[1], dst)
		if err == nil || !(errors.Is(err, castore.ErrCorrupt) || errors.Is(err, castore.ErrInvalid)) {
			t.Errorf("GetObject(%d, %d) of a 1000-byte object: err %v, want ErrCorrupt or ErrInvalid", r[0], r[1], err)
		}
		if string(got) != "keep" {
			t.Errorf("GetObject(%d, %d) beyond the end appended %d bytes", r[0], r[1], len(got)-4)
		}
	}
}

func testPutTwice(t *testing.T, s pebblestore.ObjectStore) {
	name, data := Object(4, 5000)
	MustPut(t, s, name, data)
	MustPut(t, s, name, data)
	if got := MustGet(t, s, name); !bytes.Equal(got, data) {
		t.Fatal("object put twice reads back different")
	}
	if got := list(t, s); len(got) != 1 || got[name] != 5000 {
		t.Fatalf("listing after putting one object twice: %v", got)
	}
}

func testDelete(t *testing.T, s pebblestore.ObjectStore) {
	ctx := context.Background()
	name, data := Object(5, 3000)
	other, odata := Object(6, 3000)
	MustPut(t, s, name, data)
	MustPut(t, s, other, odata)
	MustGet(t, s, name) // a cache now holds it
	for i := range 2 {
		if err := s.DeleteObject(ctx, name); err != nil {
			t.Fatalf("DeleteObject #%d: %v", i+1, err)
		}
	}
	if _, err := s.GetObject(ctx, name, 0, -1, nil); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("GetObject after delete: %v, want ErrNotFound", err)
	}
	missing, _ := Object(7, 1)
	if err := s.DeleteObject(ctx, missing); err != nil {
		t.Fatalf("DeleteObject of a missing object: %v", err)
	}
	if got := MustGet(t, s, other); !bytes.Equal(got, odata) {
		t.Fatal("deleting one object changed another")
	}
	if got := list(t, s); len(got) != 1 || got[other] != 3000 {
		t.Fatalf("listing after delete: %v", got)
	}
}

func list(t *testing.T, s pebblestore.ObjectStore) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := s.ListObjects(context.Background(), func(name string, size int64) error {
		if _, dup := got[name]; dup {
			t.Errorf("ListObjects gave %s twice", name)
		}
		got[name] = size
		return nil
	})
	if err != nil {
		t.Fatalf("ListObjects: %v", err)
	}
	return got
}

func testList(t *testing.T, s pebblestore.ObjectStore) {
	if got := list(t, s); len(got) != 0 {
		t.Fatalf("empty store lists %v", got)
	}
	want := map[string]int64{}
	for i := range 30 {
		name, data := Object(uint64(100+i), 10+i)
		MustPut(t, s, name, data)
		want[name] = int64(len(data))
	}
	// A name that is not a digest: plain hex, as DirObjects accepts.
	MustPut(t, s, "abc123", []byte("not a digest"))
	want["abc123"] = 12
	got := list(t, s)
	if len(got) != len(want) {
		t.Fatalf("ListObjects gave %d objects, want %d", len(got), len(want))
	}
	for name, size := range want {
		if got[name] != size {
			t.Errorf("ListObjects: %s has %d bytes, want %d", name, got[name], size)
		}
	}
	if b := MustGet(t, s, "abc123"); string(b) != "not a digest" {
		t.Errorf("object abc123 reads back as %q", b)
	}
}

func testListStops(t *testing.T, s pebblestore.ObjectStore) {
	for i := range 5 {
		name, data := Object(uint64(200+i), 10)
		MustPut(t, s, name, data)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.ListObjects(context.Background(), func(string, int64) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ListObjects with fn failing: err %v after %d calls, want fn's error after 1", err, calls)
	}
}

func testInvalidNames(t *testing.T, s pebblestore.ObjectStore) {
	ctx := context.Background()
	for _, name := range []string{"", "ab", "ABCDEF", "../../etc/passwd", "abc/def", "abc.tmp1", "zz00", string(make([]byte, 200))} {
		if err := s.PutObject(ctx, name, []byte("x")); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("PutObject(%q) = %v, want ErrInvalid", name, err)
		}
		if _, err := s.GetObject(ctx, name, 0, -1, nil); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("GetObject(%q) = %v, want ErrInvalid", name, err)
		}
		if err := s.DeleteObject(ctx, name); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("DeleteObject(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if got := list(t, s); len(got) != 0 {
		t.Fatalf("invalid puts left objects: %v", got)
	}
}

func testConcurrentSamePuts(t *testing.T, s pebblestore.ObjectStore) {
	name, data := Object(8, 200_000)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.PutObject(context.Background(), name, data) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent PutObject: %v", err)
		}
	}
	if got := MustGet(t, s, name); !bytes.Equal(got, data) {
		t.Fatal("object put concurrently reads back different")
	}
}

func testConcurrentReads(t *testing.T, s pebblestore.ObjectStore) {
	var names []string
	objs := map[string][]byte{}
	for i := range 4 {
		name, data := Object(uint64(300+i), 150_000)
		MustPut(t, s, name, data)
		names = append(names, name)
		objs[name] = data
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			name := names[i%len(names)]
			off := int64(i * 997)
			got, err := s.GetObject(context.Background(), name, off, 1000, nil)
			if err == nil && !bytes.Equal(got, objs[name][off:off+1000]) {
				err = fmt.Errorf("range %d+1000 of %s differs", off, name)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent GetObject: %v", err)
		}
	}
}

func testCanceled(t *testing.T, s pebblestore.ObjectStore) {
	name, data := Object(9, 1000)
	MustPut(t, s, name, data)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetObject(ctx, name, 0, -1, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("GetObject with a canceled context: %v", err)
	}
	other, odata := Object(10, 1000)
	if err := s.PutObject(ctx, other, odata); !errors.Is(err, context.Canceled) {
		t.Errorf("PutObject with a canceled context: %v", err)
	}
}

func testLarge(t *testing.T, s pebblestore.ObjectStore) {
	name, data := Object(11, LargeSize)
	MustPut(t, s, name, data)
	if got := MustGet(t, s, name); !bytes.Equal(got, data) {
		t.Fatalf("object of %d bytes reads back as %d bytes, differing", len(data), len(got))
	}
	got, err := s.GetObject(context.Background(), name, 10<<20, 1<<20, nil)
	if err != nil || !bytes.Equal(got, data[10<<20:11<<20]) {
		t.Fatalf("range at 10 MiB of the large object: %v", err)
	}
}

func testEmptyObject(t *testing.T, s pebblestore.ObjectStore) {
	name, _ := Object(12, 0)
	MustPut(t, s, name, nil)
	if got := MustGet(t, s, name); len(got) != 0 {
		t.Fatalf("empty object reads back as %d bytes", len(got))
	}
	if got := list(t, s); got[name] != 0 || len(got) != 1 {
		t.Fatalf("listing of one empty object: %v", got)
	}
}

// testTimes checks an ObjectTimer (skipped for a store that is not one):
// ListObjectTimes lists what ListObjects does, with the time of the last
// put, which ObjectTime gives too; a put again moves it on; a missing
// object is ErrNotFound.
func testTimes(t *testing.T, s pebblestore.ObjectStore) {
	timer, ok := s.(pebblestore.ObjectTimer)
	if !ok {
		t.Skip("not an ObjectTimer")
	}
	ctx := context.Background()
	// Object stores keep times to the second (S3's Last-Modified).
	before := time.Now().Add(-2 * time.Second)
	name, data := Object(7, 100)
	MustPut(t, s, name, data)
	times := map[string]time.Time{}
	err := timer.ListObjectTimes(ctx, func(n string, size int64, written time.Time) error {
		if size != int64(len(data)) {
			t.Errorf("ListObjectTimes: %s has %d bytes, want %d", n, size, len(data))
		}
		times[n] = written
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	listed, ok := times[name]
	if len(times) != 1 || !ok || listed.Before(before) || listed.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("ListObjectTimes gave %v, want %s written about now", times, name)
	}
	// S3 lists milliseconds, and HEAD answers whole seconds.
	got, err := timer.ObjectTime(ctx, name)
	if err != nil || !got.Truncate(time.Second).Equal(listed.Truncate(time.Second)) {
		t.Errorf("ObjectTime = %v, %v; want %v as listed, to the second", got, err, listed)
	}
	// Put again (a packer repacking the same chunks): written anew.
	time.Sleep(1100 * time.Millisecond)
	MustPut(t, s, name, data)
	if again, err := timer.ObjectTime(ctx, name); err != nil || !again.Truncate(time.Second).After(listed.Truncate(time.Second)) {
		t.Errorf("ObjectTime after a second put = %v, %v; want after %v", again, err, listed)
	}
	missing, _ := Object(8, 100)
	if _, err := timer.ObjectTime(ctx, missing); !errors.Is(err, castore.ErrNotFound) {
		t.Errorf("ObjectTime of a missing object: %v, want ErrNotFound", err)
	}
}
