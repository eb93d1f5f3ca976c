package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/storepb"
)

// e2eDeepMaxRSS is the peak resident set size allowed to ingest or render
// a NAR nested as deep as the reader allows.
const e2eDeepMaxRSS = 200 << 20

// e2eDeepNAR writes a NAR of depth nested directories with 40-byte names,
// each holding a small file besides the next directory, to a file, and
// returns its path, size and SHA-256. It streams: the test process's own
// peak memory is inherited by the children it starts (Linux counts it in
// their getrusage maximum), so it must stay small.
func e2eDeepNAR(t *testing.T, depth int) (string, int64, [sha256.Size]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("deep-%d.nar", depth))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	w := bufio.NewWriter(io.MultiWriter(f, h, e2eCounter{&n}))
	str := func(ss ...string) {
		var b [8]byte
		for _, s := range ss {
			binary.LittleEndian.PutUint64(b[:], uint64(len(s)))
			w.Write(b[:])
			w.WriteString(s)
			w.Write(make([]byte, (8-len(s)%8)%8))
		}
	}
	name := "directory-" + strings.Repeat("x", 30)
	str("nix-archive-1")
	for i := range depth {
		str("(", "type", "directory")
		str("entry", "(", "name", "a", "node", "(", "type", "regular", "contents", fmt.Sprintf("file at depth %d\n", i+1), ")", ")")
		if i < depth-1 {
			str("entry", "(", "name", name, "node")
		}
	}
	for i := range depth {
		str(")")
		if i < depth-1 {
			str(")")
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, n, [sha256.Size]byte(h.Sum(nil))
}

// TestDeepNARMemory: a NAR nested 60,000 directories deep ingests and
// renders back byte for byte in bounded memory, and one nested past the
// limit (65,536) is refused with an error naming the byte offset and the
// depth, also in bounded memory.
//
// Not parallel: it bounds peak RSS, and a child's as getrusage reports it
// includes the test process's own at the fork.
func TestDeepNARMemory(t *testing.T) {
	const limit = 60000
	s := newE2EStore(t)
	path, size, sum := e2eDeepNAR(t, limit)
	ingest := e2eInvocation{Args: []string{"nar", "ingest", "--data", s.dir, path}}.run(t)
	if ingest.Err != nil {
		t.Fatalf("ingest of %d levels: %v\n%s", limit, ingest.Err, ingest.Stderr)
	}
	got := e2eParseIngest(t, ingest.Stdout)
	if got.NarSize != size || got.NarHash != e2eNARHash(sum) {
		t.Errorf("ingest of %d levels: %d bytes, %s; want %d bytes, %s", limit, got.NarSize, got.NarHash, size, e2eNARHash(sum))
	}
	h := sha256.New()
	var rendered int64
	render := e2eInvocation{Args: []string{"nar", "render", "--data", s.dir, "--root", string(got.Root)}, Stdout: io.MultiWriter(h, e2eCounter{&rendered})}.run(t)
	if render.Err != nil {
		t.Fatalf("render of %d levels: %v\n%s", limit, render.Err, render.Stderr)
	}
	if rendered != size || [sha256.Size]byte(h.Sum(nil)) != sum {
		t.Errorf("render of %d levels: %d bytes differing from the %d-byte NAR", limit, rendered, size)
	}

	deepPath, deepSize, _ := e2eDeepNAR(t, castore.MaxDepth+1000)
	refused := e2eInvocation{Args: []string{"nar", "ingest", "--data", newE2EStore(t).dir, deepPath}}.run(t)
	wantErr := fmt.Sprintf("directory nested %d deep, limit %d", castore.MaxDepth+1, castore.MaxDepth)
	if refused.Err == nil || !strings.Contains(refused.Stderr, wantErr) || !strings.Contains(refused.Stderr, "at byte offset ") {
		t.Errorf("ingest past the depth limit: %v, stderr %.400q; want an error saying %q and the byte offset", refused.Err, refused.Stderr, wantErr)
	}
	if len(refused.Stderr) > 4096 {
		t.Errorf("ingest past the depth limit: %d bytes of error", len(refused.Stderr))
	}

	for _, r := range []struct {
		what string
		res  e2eResult
	}{
		{fmt.Sprintf("ingest of %d levels (%d-byte NAR)", limit, size), ingest},
		{fmt.Sprintf("render of %d levels", limit), render},
		{fmt.Sprintf("refused ingest of %d levels (%d-byte NAR)", castore.MaxDepth+1000, deepSize), refused},
	} {
		t.Logf("%s: peak RSS (getrusage, an upper bound: it includes the test process's peak) %.1f MiB in %v", r.what, float64(r.res.MaxRSS)/(1<<20), r.res.Elapsed.Round(time.Millisecond))
		if r.res.MaxRSS > e2eDeepMaxRSS {
			t.Errorf("%s: peak RSS %d MiB, want at most %d MiB", r.what, r.res.MaxRSS>>20, e2eDeepMaxRSS>>20)
		}
	}
}

// serveHWM returns the peak resident set size of process pid (VmHWM).
func serveHWM(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no VmHWM", pid)
	return 0
}

// processCPU returns the CPU time process pid has used (user and system).
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command, which ends with the last ")": state is
	// field 3, utime and stime fields 14 and 15, in clock ticks (100 Hz).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// TestDeepGRPCChainMemory: a chain of 60,000 directories put over gRPC
// (each holding a small file beside the next, 40-byte names), then
// CalculateNAR of its root, keep the server's peak RSS under 200 MiB, and
// CalculateNAR agrees with the NAR of that tree.
//
// Not parallel: it bounds the server's peak RSS.
func TestDeepGRPCChainMemory(t *testing.T) {
	const depth = 60000
	srv := startGRPCServe(t, filepath.Join(t.TempDir(), "data"))
	conn := grpcConn(t, srv.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	contents := []byte("a file at every level\n")
	blob, err := castorepb.NewBlobServiceClient(conn).Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := blob.Send(&castorepb.BlobChunk{Data: contents}); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	file := castore.FileEntry{Name: "a", Digest: castore.Hash(contents), Size: uint64(len(contents))}
	name := "directory-" + strings.Repeat("x", 30)

	// The chain, leaves first, and its NAR's size and hash, computed
	// here as Nix would lay it out.
	start := time.Now()
	put, err := castorepb.NewDirectoryServiceClient(conn).Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &castore.Directory{Files: []castore.FileEntry{file}}
	for i := range depth {
		if err := put.Send(castore.DirectoryToProto(c)); err != nil {
			t.Fatalf("directory %d: %v", i, err)
		}
		if i < depth-1 {
			c = &castore.Directory{Directories: []castore.DirectoryEntry{{Name: name, Digest: c.Digest(), Size: c.Size()}}, Files: []castore.FileEntry{file}}
		}
	}
	if _, err := put.CloseAndRecv(); err != nil {
		t.Fatalf("Put of %d directories: %v", depth, err)
	}
	putTime := time.Since(start)
	putHWM := serveHWM(t, srv.cmd.Process.Pid)

	start = time.Now()
	cpu := processCPU(t, srv.cmd.Process.Pid)
	root := castore.Entry{Kind: castore.KindDirectory, Digest: c.Digest(), Size: c.Size()}
	got, err := storepb.NewPathInfoServiceClient(conn).CalculateNAR(ctx, castore.EntryToProto(root))
	if err != nil {
		t.Fatalf("CalculateNAR: %v", err)
	}
	calcTime := time.Since(start)
	calcCPU := processCPU(t, srv.cmd.Process.Pid) - cpu
	hwm := serveHWM(t, srv.cmd.Process.Pid)

	h := sha256.New()
	var n int64
	w := bufio.NewWriter(io.MultiWriter(h, e2eCounter{&n}))
	str := func(ss ...string) {
		var b [8]byte
		for _, s := range ss {
			binary.LittleEndian.PutUint64(b[:], uint64(len(s)))
			w.Write(b[:])
			w.WriteString(s)
			w.Write(make([]byte, (8-len(s)%8)%8))
		}
	}
	str("nix-archive-1")
	for i := range depth {
		str("(", "type", "directory", "entry", "(", "name", "a", "node", "(", "type", "regular", "contents", string(contents), ")", ")")
		if i < depth-1 {
			str("entry", "(", "name", name, "node")
		}
	}
	for i := range depth {
		str(")")
		if i < depth-1 {
			str(")")
		}
	}
	w.Flush()
	if got.GetNarSize() != uint64(n) || !bytes.Equal(got.GetNarSha256(), h.Sum(nil)) {
		t.Errorf("CalculateNAR of %d levels: %d bytes, %x; want %d bytes, %x", depth, got.GetNarSize(), got.GetNarSha256(), n, h.Sum(nil))
	}
	t.Logf("%d-directory chain: Put in %v (server peak RSS %.1f MiB), CalculateNAR of its %d-byte NAR in %v (server CPU %v); server peak RSS %.1f MiB",
		depth, putTime.Round(time.Millisecond), float64(putHWM)/(1<<20), n, calcTime.Round(time.Millisecond), calcCPU, float64(hwm)/(1<<20))
	if hwm > e2eDeepMaxRSS {
		t.Errorf("server peak RSS %d MiB, want at most %d MiB", hwm>>20, e2eDeepMaxRSS>>20)
	}
}
