//go:build !unix

package client

import "os"

// newFile is a file a pull is writing.
type newFile struct {
	path string
	f    *os.File
}

// createFile creates the file path, which must not exist, for writing,
// with mode 0o755 when executable, else 0o644.
func createFile(path string, executable bool) (*newFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode(executable))
	if err != nil {
		return nil, err
	}
	return &newFile{path: path, f: f}, f.Chmod(fileMode(executable))
}

// createTemp creates a file of a new name in dir, as createFile does.
func createTemp(dir string, executable bool) (*newFile, error) {
	f, err := os.CreateTemp(dir, ".nixcas-")
	if err != nil {
		return nil, err
	}
	return &newFile{path: f.Name(), f: f}, f.Chmod(fileMode(executable))
}

func (f *newFile) write(p []byte) error {
	_, err := f.f.Write(p)
	return err
}

// close closes f; closing it again does nothing.
func (f *newFile) close() error {
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	return err
}

func fileMode(executable bool) os.FileMode {
	if executable {
		return 0o755
	}
	return 0o644
}
