package pebblestore

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// lockHolderEnv makes the test binary, run as TestLockHolderProcess, open
// the store in the directory it names, print "open", and hold it until its
// stdin closes.
const lockHolderEnv = "NIXCAS_TEST_LOCK_HOLDER"

func TestLockHolderProcess(t *testing.T) {
	dir := os.Getenv(lockHolderEnv)
	if dir == "" {
		return // not the helper process
	}
	s, err := Open(dir, Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("open")
	bufio.NewReader(os.Stdin).ReadString('\n')
	s.Close()
	os.Exit(0)
}

// holdStore starts a process holding the store in dir and returns its pid;
// the process ends with the test.
func holdStore(t *testing.T, dir string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderProcess$")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("lock holder: %q, %v", line, err)
	}
	return cmd.Process.Pid
}

// TestOpenPebbleLocked opens stores that another process, or this one,
// holds, and checks that the error names the directory and the holder.
func TestOpenPebbleLocked(t *testing.T) {
	small := Options{CacheSize: 1 << 20, MemTableSize: 1 << 20}

	t.Run("other process", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		pid := holdStore(t, dir)
		_, err := Open(dir, small)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("Open of a held store: %v, want ErrLocked", err)
		}
		for _, want := range []string{dir, "process " + strconv.Itoa(pid), "TestLockHolderProcess"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "resource temporarily unavailable") {
			t.Errorf("error %q passes Pebble's text through", err)
		}
	})

	t.Run("owner not recorded", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		holdStore(t, dir)
		// A dead process's record, as a crashed owner leaves it.
		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(fmt.Sprintf("%d\nold\n", dead.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, small)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another process") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Open of a held store with a stale owner: %v", err)
		}
	})

	t.Run("this process", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		s, err := Open(dir, small)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = Open(dir, small)
		want := fmt.Sprintf("already open in this process (pid %d)", os.Getpid())
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("second Open in one process: %v, want %q", err, want)
		}
	})

	t.Run("released", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		s, err := Open(dir, small)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(dir, small)
		if err != nil {
			t.Fatalf("reopening a closed store: %v", err)
		}
		s.Close()
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil || !strings.HasPrefix(string(b), strconv.Itoa(os.Getpid())+"\n") {
			t.Errorf("owner file %q, %v: want this process's pid", b, err)
		}
	})
}

func TestIsLockConflict(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.EAGAIN, true},
		{syscall.EACCES, true},
		{fmt.Errorf("pebble: %w", syscall.EAGAIN), true},
		{errors.New("lock held by current process"), true},
		{&fs.PathError{Op: "open", Path: "/x/LOCK", Err: syscall.EACCES}, false},
		{syscall.ENOSPC, false},
		{errors.New("pebble: corrupt manifest"), false},
	} {
		if got := isLockConflict(tc.err); got != tc.want {
			t.Errorf("isLockConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
