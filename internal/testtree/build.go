package testtree

import (
	"fmt"
	"io"
	"os"
	"testing"
)

// Build writes n to path, which must not exist yet (its parent must). The
// root may be any node type, so path becomes a directory, a file or a
// symlink. It fails the test on error.
func Build(t testing.TB, path string, n *Node) {
	t.Helper()
	if err := Write(path, n); err != nil {
		t.Fatalf("testtree: building %s: %v", path, err)
	}
}

// Write is [Build] for callers without a testing.TB.
//
// Directories are populated relative to open directory handles rather than
// by full path, so trees whose paths exceed PATH_MAX can still be created.
func Write(path string, n *Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	switch n.Type {
	case Regular:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode(n))
		if err != nil {
			return err
		}
		return writeContent(f, n)
	case Symlink:
		return os.Symlink(n.Target, path)
	default:
		if err := os.Mkdir(path, 0o755); err != nil {
			return err
		}
		root, err := os.OpenRoot(path)
		if err != nil {
			return err
		}
		defer root.Close()
		return writeDir(root, n)
	}
}

func writeDir(dir *os.Root, n *Node) error {
	for _, name := range n.Names() {
		child := n.Entries[name]
		switch child.Type {
		case Regular:
			f, err := dir.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode(child))
			if err != nil {
				return err
			}
			if err := writeContent(f, child); err != nil {
				return err
			}
		case Symlink:
			if err := dir.Symlink(child.Target, name); err != nil {
				return err
			}
		case Directory:
			if err := dir.Mkdir(name, 0o755); err != nil {
				return err
			}
			sub, err := dir.OpenRoot(name)
			if err != nil {
				return err
			}
			err = writeDir(sub, child)
			sub.Close()
			if err != nil {
				return fmt.Errorf("%s/%w", name, err)
			}
		}
	}
	return nil
}

func fileMode(n *Node) os.FileMode {
	if n.Executable {
		return 0o755
	}
	return 0o644
}

// writeContent copies n's content into f and closes it. The mode is set
// explicitly so the result does not depend on the umask.
func writeContent(f *os.File, n *Node) error {
	written, err := io.Copy(f, n.Content.Open())
	if err == nil && written != n.Content.Size() {
		err = fmt.Errorf("%s: content produced %d bytes, declared size %d", f.Name(), written, n.Content.Size())
	}
	if err == nil {
		err = f.Chmod(fileMode(n))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
