package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
)

// diskMountTmpfs mounts a tmpfs of size bytes on a new directory,
// unmounted at the end of the test. The tests run as root.
func diskMountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mounting a tmpfs on %s (the tests need root): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// diskFill allocates a file at path that leaves free bytes free on its
// file system.
func diskFill(t *testing.T, path string, free int64) {
	t.Helper()
	n := diskAvail(t, filepath.Dir(path)) - free
	if n <= 0 {
		t.Fatalf("only %d bytes free, cannot leave %d", diskAvail(t, filepath.Dir(path)), free)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		t.Fatalf("allocating %d bytes for %s: %v", n, path, err)
	}
}

func diskAvail(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// diskReserve is the free space the default options keep.
var diskReserve = int64(2*pebblestore.DefaultOptions.MemTableSize + pebblestore.DefaultOptions.MinFreeBytes)

// diskNAR writes the NAR of a directory holding one incompressible file of
// size bytes (plus a small one) to a new file on the ordinary disk.
func diskNAR(t *testing.T, seed uint64, size int64) string {
	t.Helper()
	return e2eWriteNARFile(t, testtree.Dir(testtree.Entries{
		"big":    testtree.File(testtree.Random(seed, size)),
		"readme": testtree.File(testtree.Text(fmt.Sprintf("tree %d\n", seed))),
	}))
}

// diskCheckNoSpaceMessage checks that a CLI error names the lack of space,
// the directory and its free space.
func diskCheckNoSpaceMessage(t *testing.T, msg, dir string) {
	t.Helper()
	for _, want := range []string{"not enough free disk space", dir, "MiB free"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error message %q does not contain %q", msg, want)
		}
	}
}

// TestFullDiskIngest: on a nearly full 256 MiB tmpfs, `nar ingest` stops
// with an error naming the directory and its free space (no crash); reads
// go on; once a filler file is deleted, the same NAR goes in, and every
// NAR renders back byte for byte.
func TestFullDiskIngest(t *testing.T) {
	t.Parallel()
	mnt := diskMountTmpfs(t, 256<<20)
	s := &e2eStore{dir: filepath.Join(mnt, "store")}
	narA, narB := diskNAR(t, 1, 8<<20), diskNAR(t, 2, 32<<20)
	a := s.ingest(t, narA)

	filler := filepath.Join(mnt, "filler")
	diskFill(t, filler, diskReserve+4<<20)
	res := e2eInvocation{Args: []string{"nar", "ingest", "--data", s.dir, narB}}.run(t)
	if res.Err == nil {
		t.Fatalf("ingesting 32 MiB with 4 MiB above the reserve succeeded: %s", res.Stdout)
	}
	msg := e2eErrorMessage(res.Stderr)
	t.Logf("ingest on a full disk: %v: %s", res.Err, msg)
	diskCheckNoSpaceMessage(t, msg, s.dir)
	if strings.Contains(res.Stderr, "waiting for free space") {
		t.Errorf("Pebble met the full disk; the guard should have stopped the write first:\n%s", res.Stderr)
	}

	// Reads work on the full disk.
	e2eCheckRender(t, s, a.Root, narA)
	if st := s.stats(t); st.Chunks == 0 {
		t.Errorf("stats on a full disk: %+v", st)
	}
	// A writable open is refused too, with the same message.
	diskFill(t, filepath.Join(mnt, "filler2"), diskReserve-4<<20)
	res = e2eInvocation{Args: []string{"nar", "ingest", "--data", s.dir, narA}}.run(t)
	if res.Err == nil {
		t.Fatal("ingest with less free space than the reserve succeeded")
	}
	diskCheckNoSpaceMessage(t, e2eErrorMessage(res.Stderr), s.dir)

	// Space freed: the NAR goes in.
	for _, f := range []string{filler, filepath.Join(mnt, "filler2")} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	b := s.ingest(t, narB)
	e2eCheckRender(t, s, a.Root, narA)
	e2eCheckRender(t, s, b.Root, narB)
}

// TestSignalEndsBlockedIngest: an ingest stuck on a full disk (the guard
// turned off, so that a write meets ENOSPC and waits for space) ends at
// SIGTERM, and the store opens and reads afterwards.
func TestSignalEndsBlockedIngest(t *testing.T) {
	t.Parallel()
	mnt := diskMountTmpfs(t, 256<<20) // a writable open wants 192 MiB free
	s := &e2eStore{dir: filepath.Join(mnt, "store")}
	narA := diskNAR(t, 3, 1<<20)
	a := s.ingest(t, narA)
	filler := filepath.Join(mnt, "filler")
	diskFill(t, filler, 16<<20)

	cmd := exec.Command(e2eBinary, "nar", "ingest", "--no-space-guard", "--data", s.dir, diskNAR(t, 4, 48<<20))
	cmd.Env = e2eEnv()
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(stderr.String(), "waiting for free space") {
		select {
		case err := <-done:
			t.Fatalf("ingest ended (%v) without meeting the full disk:\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("ingest never met the full disk:\n%s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("ingest on a full disk exited 0 after SIGTERM")
		}
		t.Logf("after SIGTERM: %v: %s", err, e2eErrorMessage(stderr.String()))
		if e2eCrashRE.MatchString(stderr.String()) {
			t.Fatalf("crashed:\n%s", stderr.String())
		}
	case <-time.After(2 * time.Minute): // shutdownGrace is 10 s
		t.Fatalf("ingest did not end within 2 minutes of SIGTERM:\n%s", stderr.String())
	}

	// The store recovers: read-only while the disk is still full, then
	// writable once space is freed.
	e2eCheckRender(t, s, a.Root, narA)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	narC := diskNAR(t, 5, 2<<20)
	c := s.ingest(t, narC)
	e2eCheckRender(t, s, a.Root, narA)
	e2eCheckRender(t, s, c.Root, narC)
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestFullDiskServer: on a nearly full tmpfs, the server answers an HTTP
// NAR upload with 507 and a gRPC push with RESOURCE_EXHAUSTED, keeps
// serving, and takes the same upload once a filler file is deleted,
// without a restart; everything uploaded renders back byte for byte.
func TestFullDiskServer(t *testing.T) {
	t.Parallel()
	// An upload takes twice its size for a while: chunks go to the
	// write-ahead log inline before the packer writes them into frames.
	mnt := diskMountTmpfs(t, 320<<20)
	data := filepath.Join(mnt, "store")
	narA, narB := diskNAR(t, 6, 4<<20), diskNAR(t, 7, 32<<20)
	srv := startGRPCServe(t, data)
	put := func(name, path string) int {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return httpPut(t, "http://"+srv.httpAddr+"/nar/"+name+".nar", b)
	}
	if code := put("a", narA); code != http.StatusCreated {
		t.Fatalf("PUT of a 4 MiB NAR: %d", code)
	}
	filler := filepath.Join(mnt, "filler")
	diskFill(t, filler, diskReserve+4<<20)
	if code := put("b", narB); code != http.StatusInsufficientStorage {
		t.Errorf("PUT of a 32 MiB NAR with 4 MiB above the reserve: %d, want 507", code)
	}

	tree := filepath.Join(t.TempDir(), "tree")
	testtree.Build(t, tree, testtree.Dir(testtree.Entries{"big": testtree.File(testtree.Random(8, 32<<20))}))
	res := e2eInvocation{Args: []string{"push", "--server", srv.grpcAddr, "--cache", t.TempDir(), tree}, Timeout: 5 * time.Minute}.run(t)
	if res.Err == nil {
		t.Errorf("push of 32 MiB with 4 MiB above the reserve succeeded")
	} else if msg := e2eErrorMessage(res.Stderr); !strings.Contains(msg, "ResourceExhausted") || !strings.Contains(msg, "not enough free disk space") {
		t.Errorf("push on a full disk: %s; want RESOURCE_EXHAUSTED naming the lack of space", msg)
	}

	// Still serving; space freed: the upload goes in, same process.
	resp, err := http.Get("http://" + srv.httpAddr + "/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /nix-cache-info on a full disk: %d", resp.StatusCode)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code := put("b", narB); code != http.StatusCreated {
		t.Errorf("PUT of the 32 MiB NAR once space was freed: %d, want 201", code)
	}
	srv.stop(t)

	// Both NARs are whole in the server's store: their roots (computed in
	// a scratch store) render back from it byte for byte.
	scratch := newE2EStore(t)
	s := &e2eStore{dir: data}
	for _, nar := range []string{narA, narB} {
		e2eCheckRender(t, s, scratch.ingest(t, nar).Root, nar)
	}
}

// TestReadOnlyCommands: `store stats` and `nar render` refuse a missing
// or non-store --data without creating anything, change nothing in a
// store, refuse a store a server has open, and report diskBytes as du
// does.
func TestReadOnlyCommands(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "notes"), []byte("not a store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &e2eStore{dir: filepath.Join(base, "store")}
	nar := diskNAR(t, 9, 3<<20)
	in := s.ingest(t, nar)

	root := string(in.Root)
	for _, dir := range []string{filepath.Join(base, "typo"), filepath.Join(base, "typo", "deeper"), other} {
		for _, args := range [][]string{
			{"store", "stats", "--data", dir},
			{"nar", "render", "--data", dir, "--root", root},
		} {
			t.Run(strings.Join(args[:2], "-")+"-"+filepath.Base(dir), func(t *testing.T) {
				before := diskSnapshot(t, base)
				res := e2eInvocation{Args: args, Timeout: time.Minute}.run(t)
				if res.Err == nil {
					t.Fatalf("succeeded on %s", dir)
				}
				if msg := e2eErrorMessage(res.Stderr); !strings.Contains(msg, "no store at "+dir) {
					t.Errorf("message %q does not say there is no store at %s", msg, dir)
				}
				diskSameSnapshot(t, before, diskSnapshot(t, base))
			})
		}
	}

	before := diskSnapshot(t, s.dir)
	st := s.stats(t)
	e2eCheckRender(t, s, in.Root, nar)
	diskSameSnapshot(t, before, diskSnapshot(t, s.dir))
	out, err := exec.Command("du", "-s", "--block-size=1", s.dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	du, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if st.DiskBytes != du {
		t.Errorf("diskBytes = %d, du says %d", st.DiskBytes, du)
	}

	// A store a server has open for writing is refused plainly.
	srv := startGRPCServe(t, s.dir)
	res := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir}, Timeout: time.Minute}.run(t)
	if msg := e2eErrorMessage(res.Stderr); res.Err == nil || !strings.Contains(msg, "is open in process") {
		t.Errorf("store stats of a served store: %v: %s", res.Err, msg)
	}
	srv.stop(t)
}

type diskFileState struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	sum   [32]byte
}

func diskSnapshot(t *testing.T, dir string) map[string]diskFileState {
	t.Helper()
	m := make(map[string]diskFileState)
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		st := diskFileState{mode: info.Mode(), size: info.Size(), mtime: info.ModTime()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			st.sum = sha256.Sum256(b)
		}
		m[path] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diskSameSnapshot(t *testing.T, before, after map[string]diskFileState) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s was removed", p)
		} else if a != b {
			t.Errorf("%s changed: %+v, was %+v", p, a, b)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}
