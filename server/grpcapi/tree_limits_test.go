package grpcapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// dagDirs returns a directory graph of the given depth, leaves first: the
// bottom directory holds one file of fileSize bytes (digest d), each one
// above names the one below twice, with the sizes an uploader computes
// (wrapping silently in 64 bits). 31 directories describe 2^30 files.
func dagDirs(depth int, fileSize uint64, d castore.Digest) []*castore.Directory {
	dirs := []*castore.Directory{{Files: []castore.FileEntry{{Name: "f", Digest: d, Size: fileSize}}}}
	for len(dirs) < depth {
		c := dirs[len(dirs)-1]
		dirs = append(dirs, &castore.Directory{Directories: []castore.DirectoryEntry{
			{Name: "a", Digest: c.Digest(), Size: c.Size()}, {Name: "b", Digest: c.Digest(), Size: c.Size()},
		}})
	}
	return dirs
}

// chainDirs returns n directories each naming the next, leaves first.
func chainDirs(n int) []*castore.Directory {
	dirs := []*castore.Directory{{}}
	for len(dirs) < n {
		c := dirs[len(dirs)-1]
		dirs = append(dirs, &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "d", Digest: c.Digest(), Size: c.Size()}}})
	}
	return dirs
}

func protos(dirs []*castore.Directory) []*castorepb.Directory {
	out := make([]*castorepb.Directory, len(dirs))
	for i, d := range dirs {
		out[i] = castore.DirectoryToProto(d)
	}
	return out
}

func rootEntry(dirs []*castore.Directory) castore.Entry {
	r := dirs[len(dirs)-1]
	return castore.Entry{Kind: castore.KindDirectory, Digest: r.Digest(), Size: r.Size()}
}

// wantStatus checks an error's code and that its message says msg.
func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v; want %v saying %q", what, err, code, msg)
	}
}

// TestDirectoryPutTreeLimits: graphs whose expanded trees are too large,
// too deep, or whose sizes wrap are refused at Put, and nothing of them is
// stored; a DAG within the limits is accepted.
func TestDirectoryPutTreeLimits(t *testing.T) {
	file := castore.Hash([]byte("x"))
	huge := castore.TreeLimits{MaxEntries: 1<<64 - 1, MaxFileBytes: 1<<64 - 1}
	for _, tc := range []struct {
		name   string
		limits castore.TreeLimits
		dirs   []*castore.Directory
		code   codes.Code
		msg    string
	}{
		{"DAG of depth 20 (1.5 million entries)", castore.TreeLimits{}, dagDirs(20, 1, file), codes.OK, ""},
		{"DAG of depth 30 (1.6 billion entries)", castore.TreeLimits{}, dagDirs(30, 1, file), codes.InvalidArgument, "entries, limit 10000000"},
		{"DAG of depth 64 (sizes wrap), no entry limit", huge, dagDirs(64, 1, file), codes.InvalidArgument, "overflows 64-bit"},
		{"DAG of depth 20 with 4 GiB files (2 PiB)", castore.TreeLimits{}, dagDirs(20, 4<<30, file), codes.InvalidArgument, "bytes of files, limit 1099511627776"},
		{"chain of 4,096", castore.TreeLimits{MaxDepth: 4096}, chainDirs(4096), codes.OK, ""},
		{"chain of 4,097", castore.TreeLimits{MaxDepth: 4096}, chainDirs(4097), codes.InvalidArgument, "4097 deep, limit 4096"},
		{"chain of 11, depth limit 10", castore.TreeLimits{MaxDepth: 10}, chainDirs(11), codes.InvalidArgument, "11 deep, limit 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, grpcapi.Options{Tree: tc.limits})
			_, err := putDirs(ts, protos(tc.dirs)...)
			wantStatus(t, "Put", err, tc.code, tc.msg)
			if tc.code == codes.OK {
				return
			}
			if st := castoretest.MustStats(t, ts.store); st.Directories != 0 {
				t.Errorf("refused stream stored %d directories", st.Directories)
			}
		})
	}
}

// TestDirectoryPutStoredDAG: a graph too large once expanded is refused
// even when its lower part is already stored and only the top is sent.
func TestDirectoryPutStoredDAG(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	dirs := dagDirs(30, 1, castore.Hash([]byte("x")))
	if _, err := putDirs(ts, protos(dirs[:20])...); err != nil {
		t.Fatal(err)
	}
	_, err := putDirs(ts, protos(dirs[20:])...)
	wantStatus(t, "Put of the top of a DAG", err, codes.InvalidArgument, "entries, limit 10000000")
	// A stored directory named with a wrapped (wrong) size is refused too.
	wrong := &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "x", Digest: dirs[19].Digest(), Size: dirs[19].Size() + 1}}}
	_, err = putDirs(ts, castore.DirectoryToProto(wrong))
	wantStatus(t, "Put naming a stored directory with a wrong size", err, codes.InvalidArgument, "size")
}

// TestDirectoryPutMemory: one stream may hold at most
// MaxPutDirectoryBytes, all streams MaxPutDirectoryBytesTotal; what a
// stream held is given back when it ends.
func TestDirectoryPutMemory(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{MaxPutDirectoryBytes: 64 << 10, MaxPutDirectoryBytesTotal: 96 << 10})
	long := protos(chainDirs(1000)) // about 400 bytes held per directory
	_, err := putDirs(ts, long...)
	wantStatus(t, "Put of a stream over the stream limit", err, codes.ResourceExhausted, "more than 65536 bytes")

	// Two streams of 150 directories (about 52 KiB each): either alone
	// keeps the limits, together they pass 96 KiB.
	first, err := ts.dirs.Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range long[:150] {
		if err := first.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	// The server holds the first stream's directories as it reads them;
	// a second stream is refused once they are held (bounded against
	// hangs). Which of the two crosses the overall limit first depends on
	// when the server reads the first: one of them, or both when they
	// cross it together, is refused, and only for the overall limit.
	var second error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, second = putDirs(ts, long[:150]...); second != nil {
			break
		}
	}
	_, firstErr := first.CloseAndRecv()
	if second == nil && firstErr == nil {
		t.Fatal("two streams holding more than 96 KiB together were both accepted")
	}
	if second != nil {
		wantStatus(t, "Put while another stream holds memory", second, codes.ResourceExhausted, "limit 98304")
	}
	if firstErr != nil {
		wantStatus(t, "a stream passing the overall limit", firstErr, codes.ResourceExhausted, "limit 98304")
	}
	if _, err := putDirs(ts, long[:150]...); err != nil {
		t.Fatalf("Put once the first stream ended: %v", err)
	}
}

// TestCalculateNARLimits: CalculateNAR measures a root before rendering
// it: a stored DAG too large once expanded is refused at once, and a
// render over the server's time budget ends with DEADLINE_EXCEEDED.
func TestCalculateNARLimits(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{RenderTimeout: time.Nanosecond})
	file := []byte("contents")
	dirs := dagDirs(30, uint64(len(file)), castore.Hash(file))
	castoretest.MustPutChunk(t, ts.store, file)
	for _, d := range dirs { // straight into the store, as an older server may have
		castoretest.MustPutDirectory(t, ts.store, d)
	}
	_, err := ts.paths.CalculateNAR(ctx, castore.EntryToProto(rootEntry(dirs)))
	wantStatus(t, "CalculateNAR of a depth-30 DAG", err, codes.InvalidArgument, "entries, limit 10000000")

	_, err = ts.paths.CalculateNAR(ctx, castore.EntryToProto(rootEntry(dirs[:12])))
	wantStatus(t, "CalculateNAR over the render timeout", err, codes.DeadlineExceeded, "render timeout (1ns)")
}
