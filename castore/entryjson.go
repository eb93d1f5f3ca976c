package castore

import (
	"encoding/json"
	"fmt"
)

// The JSON form of an Entry, which the command line prints and reads:
//
//	{"directory":{"digest":"<64 hex>","size":N}}
//	{"file":{"digest":"<64 hex>","size":N,"executable":BOOL}}
//	{"symlink":{"target":"..."}}
//
// with a "name" member inside when the entry has a name.
type jsonEntry struct {
	Directory *jsonNode `json:"directory,omitempty"`
	File      *jsonNode `json:"file,omitempty"`
	Symlink   *jsonNode `json:"symlink,omitempty"`
}

type jsonNode struct {
	Name       string  `json:"name,omitempty"`
	Digest     *Digest `json:"digest,omitempty"`
	Size       *uint64 `json:"size,omitempty"`
	Executable *bool   `json:"executable,omitempty"`
	Target     *string `json:"target,omitempty"`
}

// MarshalText implements encoding.TextMarshaler (hex).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	*d = p
	return err
}

// MarshalJSON implements json.Marshaler.
func (e Entry) MarshalJSON() ([]byte, error) {
	n := &jsonNode{Name: e.Name}
	var j jsonEntry
	switch e.Kind {
	case KindDirectory:
		n.Digest, n.Size = &e.Digest, &e.Size
		j.Directory = n
	case KindFile:
		n.Digest, n.Size, n.Executable = &e.Digest, &e.Size, &e.Executable
		j.File = n
	case KindSymlink:
		n.Target = &e.Target
		j.Symlink = n
	default:
		return nil, fmt.Errorf("%w: entry of %v", ErrInvalid, e.Kind)
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler, requiring exactly one kind
// and the members that kind has.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j jsonEntry
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: entry: %v", ErrInvalid, err)
	}
	var n *jsonNode
	kinds := 0
	for k, p := range map[Kind]*jsonNode{KindDirectory: j.Directory, KindFile: j.File, KindSymlink: j.Symlink} {
		if p != nil {
			e.Kind, n = k, p
			kinds++
		}
	}
	if kinds != 1 {
		return fmt.Errorf(`%w: entry: want exactly one of "directory", "file", "symlink"`, ErrInvalid)
	}
	*e = Entry{Name: n.Name, Kind: e.Kind}
	switch e.Kind {
	case KindSymlink:
		if n.Target == nil {
			return fmt.Errorf(`%w: entry: symlink without "target"`, ErrInvalid)
		}
		e.Target = *n.Target
		return nil
	case KindFile:
		if n.Executable != nil {
			e.Executable = *n.Executable
		}
	}
	if n.Digest == nil || n.Size == nil {
		return fmt.Errorf(`%w: entry: %v needs "digest" and "size"`, ErrInvalid, e.Kind)
	}
	e.Digest, e.Size = *n.Digest, *n.Size
	return nil
}
