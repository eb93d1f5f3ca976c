package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GoToolchain makes a tree of the Go release version (e.g. "go1.22.0") for
// linux-amd64 under dir and returns its path. It fetches the release as a
// Go module (go mod download, through the module proxy and its cache) and
// copies it with the executable bits a real install has: everything under
// bin/ and pkg/tool/, and shell scripts. An existing tree is reused.
func GoToolchain(ctx context.Context, version, dir string) (string, error) {
	dst := filepath.Join(dir, version)
	done := dst + ".complete" // beside the tree: it is not part of it
	if _, err := os.Stat(done); err == nil {
		return dst, nil
	}
	mod := "golang.org/toolchain@v0.0.1-" + version + ".linux-amd64"
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var info struct {
		Dir   string
		Error string
	}
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("bench: fetching %s: %s", mod, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("bench: go mod download %s: %w", mod, err)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("bench: go mod download %s: no directory in %q", mod, out)
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := copyTree(info.Dir, dst, goExecutable); err != nil {
		return "", fmt.Errorf("bench: copying %s: %w", mod, err)
	}
	return dst, os.WriteFile(done, nil, 0o644)
}

// goExecutable says whether a file of a Go release is executable in a
// real install.
func goExecutable(rel string) bool {
	return strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "pkg/tool/") ||
		strings.HasSuffix(rel, ".bash") || strings.HasSuffix(rel, ".sh") || strings.HasSuffix(rel, ".rc")
}

// copyTree copies the regular files, directories and symlinks under src to
// dst, making a file executable when exec says so and writable for the
// owner (the module cache keeps files read-only).
func copyTree(src, dst string, exec func(rel string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			mode := os.FileMode(0o644)
			if exec(filepath.ToSlash(rel)) {
				mode = 0o755
			}
			return copyFile(path, target, mode)
		}
		return nil
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
