package testtree

import (
	"fmt"
	"slices"
	"strings"
)

// Type is the kind of a [Node].
type Type uint8

// Node types, matching the three node kinds of a NAR.
const (
	Regular Type = iota + 1
	Directory
	Symlink
)

func (t Type) String() string {
	switch t {
	case Regular:
		return "regular"
	case Directory:
		return "directory"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Node describes a file system object: a regular file, a directory or a
// symlink. Build nodes with [File], [Exec], [Dir] and [Link].
type Node struct {
	Type Type

	// Regular files.
	Content    Content
	Executable bool

	// Symlinks.
	Target string

	// Directories. Keys are entry names; a nil map is an empty directory.
	Entries Entries
}

// Entries maps directory entry names to their nodes.
type Entries map[string]*Node

// File returns a non-executable regular file.
func File(c Content) *Node { return &Node{Type: Regular, Content: c} }

// Exec returns an executable regular file.
func Exec(c Content) *Node { return &Node{Type: Regular, Content: c, Executable: true} }

// Link returns a symlink pointing at target.
func Link(target string) *Node { return &Node{Type: Symlink, Target: target} }

// Dir returns a directory holding entries.
func Dir(entries Entries) *Node { return &Node{Type: Directory, Entries: entries} }

// Tree is a named root node, one of the catalogue entries of [EdgeCases].
type Tree struct {
	Name string
	Root *Node
}

// Names returns the entry names of a directory node in NAR order, i.e.
// sorted by their bytes.
func (n *Node) Names() []string {
	names := make([]string, 0, len(n.Entries))
	for name := range n.Entries {
		names = append(names, name)
	}
	slices.Sort(names) // Go strings compare bytewise, which is NAR order.
	return names
}

// Walk calls fn for n and every node below it, parents before children and
// siblings in NAR order. path is slash-separated and relative to n; it is ""
// for n itself. Returning a non-nil error stops the walk.
func (n *Node) Walk(fn func(path string, n *Node) error) error {
	return n.walk("", fn)
}

func (n *Node) walk(path string, fn func(string, *Node) error) error {
	if err := fn(path, n); err != nil {
		return err
	}
	if n.Type != Directory {
		return nil
	}
	for _, name := range n.Names() {
		p := name
		if path != "" {
			p = path + "/" + name
		}
		if err := n.Entries[name].walk(p, fn); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports whether n can be written to disk and serialised as a NAR:
// every node has a known type, files have content, symlink targets are
// non-empty and entry names are valid single path components.
func (n *Node) Validate() error {
	return n.Walk(func(path string, n *Node) error {
		if n == nil {
			return fmt.Errorf("%q: nil node", path)
		}
		switch n.Type {
		case Regular:
			if n.Content == nil {
				return fmt.Errorf("%q: regular file without content", path)
			}
		case Symlink:
			if n.Target == "" || strings.IndexByte(n.Target, 0) >= 0 {
				return fmt.Errorf("%q: invalid symlink target %q", path, n.Target)
			}
		case Directory:
			for name := range n.Entries {
				if err := validName(name); err != nil {
					return fmt.Errorf("%q: %w", path, err)
				}
			}
		default:
			return fmt.Errorf("%q: unknown node type %v", path, n.Type)
		}
		return nil
	})
}

// MaxNameLen is the longest entry name Linux file systems accept, in bytes.
const MaxNameLen = 255

func validName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("invalid entry name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("entry name %q contains '/' or NUL", name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("entry name of %d bytes exceeds %d", len(name), MaxNameLen)
	}
	return nil
}

// FileBytes returns the total size of all regular files under n, counting
// files with identical content once per occurrence.
func (n *Node) FileBytes() int64 {
	var total int64
	n.Walk(func(_ string, n *Node) error {
		if n.Type == Regular {
			total += n.Content.Size()
		}
		return nil
	})
	return total
}

// DistinctFileBytes returns the total size of the distinct file contents
// under n: files whose bytes are identical (regardless of name or executable
// bit) are counted once. It reads all content, so it costs a full pass over
// FileBytes bytes.
func (n *Node) DistinctFileBytes() (int64, error) {
	seen := map[[32]byte]bool{}
	var total int64
	err := n.Walk(func(path string, n *Node) error {
		if n.Type != Regular {
			return nil
		}
		sum, err := Sum(n.Content)
		if err != nil {
			return fmt.Errorf("%q: %w", path, err)
		}
		if !seen[sum] {
			seen[sum] = true
			total += n.Content.Size()
		}
		return nil
	})
	return total, err
}

// Descendants returns the number of nodes below n (files, symlinks and
// directories at any depth, not counting n itself). This is the "size" a
// content-addressed directory reports for itself.
func (n *Node) Descendants() int64 {
	var count int64
	n.Walk(func(string, *Node) error {
		count++
		return nil
	})
	return count - 1
}

// LongestPath returns the length in bytes of the longest slash-separated path
// below n, relative to n. Tools that address files by full path (Nix among
// them) fail once the path of a tree's root plus this exceeds [PathMax].
func (n *Node) LongestPath() int {
	longest := 0
	n.Walk(func(path string, _ *Node) error {
		longest = max(longest, len(path))
		return nil
	})
	return longest
}

// PathMax is Linux's PATH_MAX: the longest path, including the terminating
// NUL, that system calls taking a path accept.
const PathMax = 4096

// FitsPathMax reports whether every path of the tree rooted at dir can be
// passed whole to a system call, which is a precondition for dumping it with
// `nix-store --dump` or hashing it with `nix-hash`.
func (n *Node) FitsPathMax(dir string) bool {
	return len(dir)+1+n.LongestPath() < PathMax
}
