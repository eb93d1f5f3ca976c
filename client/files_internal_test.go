//go:build unix

package client

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCreateFileMode: files a pull creates are 0o644, or 0o755 when
// executable, whatever the umask (set with chmod only when the umask
// takes bits away); an existing name is refused; readUmask agrees with
// the process's umask.
func TestCreateFileMode(t *testing.T) {
	for _, mask := range []int{0o022, 0o077, 0o000, 0o027} {
		old := syscall.Umask(mask)
		got := readUmask()
		syscall.Umask(old)
		if got != uint32(mask) {
			t.Errorf("readUmask with umask %#o = %#o", mask, got)
		}
	}
	for _, mask := range []int{0o022, 0o077, 0o000} {
		umaskOnce.Do(func() {})
		saved := umask
		umask = uint32(mask)
		old := syscall.Umask(mask)
		dir := t.TempDir()
		for _, exec := range []bool{false, true} {
			p := filepath.Join(dir, "f")
			if exec {
				p += "x"
			}
			f, err := createFile(p, exec)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.write([]byte("data")); err != nil {
				t.Fatal(err)
			}
			if err := f.close(); err != nil {
				t.Fatal(err)
			}
			if err := f.close(); err != nil {
				t.Errorf("second close: %v", err)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			want := os.FileMode(0o644)
			if exec {
				want = 0o755
			}
			if fi.Mode() != want || fi.Size() != 4 {
				t.Errorf("umask %#o, executable %v: mode %v, %d bytes; want %v, 4 bytes", mask, exec, fi.Mode(), fi.Size(), want)
			}
			if _, err := createFile(p, exec); !os.IsExist(err) {
				t.Errorf("createFile over an existing file: %v", err)
			}
		}
		tf, err := createTemp(dir, true)
		if err != nil {
			t.Fatal(err)
		}
		tf.close()
		if fi, err := os.Stat(tf.path); err != nil || fi.Mode() != 0o755 || filepath.Dir(tf.path) != dir {
			t.Errorf("createTemp: %s, %v, %v", tf.path, fi.Mode(), err)
		}
		syscall.Umask(old)
		umask = saved
	}
}
