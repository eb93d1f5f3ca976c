package client

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// DumpReader returns a reader of the NAR of the file system object at
// path, made as it is read, as `nix-store --dump` makes it: directory
// entries in byte order of their names, a file executable when its owner
// may execute it, symlinks not followed, nothing else recorded. A file
// that changes size while it is read is an error. Close the reader when
// done, also before its end.
func DumpReader(path string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		err := dump(bw, path)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// dump writes the NAR of path to w.
func dump(w *bufio.Writer, path string) error {
	narString(w, "nix-archive-1")
	return dumpNode(w, path)
}

func dumpNode(w *bufio.Writer, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	narString(w, "(")
	narString(w, "type")
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		narString(w, "symlink")
		narString(w, "target")
		narString(w, target)
	case fi.IsDir():
		entries, err := os.ReadDir(path) // sorted by name, byte order
		if err != nil {
			return err
		}
		narString(w, "directory")
		for _, e := range entries {
			narString(w, "entry")
			narString(w, "(")
			narString(w, "name")
			narString(w, e.Name())
			narString(w, "node")
			if err := dumpNode(w, filepath.Join(path, e.Name())); err != nil {
				return err
			}
			narString(w, ")")
		}
	case fi.Mode().IsRegular():
		narString(w, "regular")
		if fi.Mode()&0o100 != 0 {
			narString(w, "executable")
			narString(w, "")
		}
		narString(w, "contents")
		if err := dumpContents(w, path, fi.Size()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("client: %s: cannot archive a %v", path, fi.Mode().Type())
	}
	narString(w, ")")
	return nil
}

// dumpContents writes the contents of the file at path, of size bytes, as
// a NAR string.
func dumpContents(w *bufio.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(size))
	w.Write(n[:])
	copied, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	if extra, _ := f.Read(n[:1]); copied != size || extra != 0 {
		return fmt.Errorf("client: %s changed size while it was read", path)
	}
	w.Write(make([]byte, (8-size%8)%8))
	return nil
}

// narString writes s as a NAR string: length, bytes, zero padding to 8.
// Errors are the bufio.Writer's, sticky, reported by its Flush.
func narString(w *bufio.Writer, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	w.Write(n[:])
	w.WriteString(s)
	w.Write(make([]byte, (8-len(s)%8)%8))
}
