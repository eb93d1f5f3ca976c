package castore

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Limits on names and symlink targets, as POSIX file systems have them.
const (
	MaxNameLen   = 255
	MaxTargetLen = 4095
)

// Kind is the type of an [Entry].
type Kind uint8

// The three kinds of entries.
const (
	KindDirectory Kind = iota + 1
	KindFile
	KindSymlink
)

func (k Kind) String() string {
	switch k {
	case KindDirectory:
		return "directory"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is a named node: a directory (Digest, Size = entries below it), a
// regular file (Digest, Size in bytes, Executable) or a symlink (Target).
// The root of a tree is an Entry with an empty Name.
type Entry struct {
	Name       string
	Kind       Kind
	Digest     Digest
	Size       uint64
	Executable bool
	Target     string
}

// Directory is one directory's listing. Each list is in strictly ascending
// byte order of names, and a name appears in at most one list.
type Directory struct {
	Directories []DirectoryEntry
	Files       []FileEntry
	Symlinks    []SymlinkEntry
}

// DirectoryEntry names a subdirectory. Size is the number of entries below
// it: the subdirectory's own entries plus, for each of its subdirectories,
// that one's Size.
type DirectoryEntry struct {
	Name   string
	Digest Digest
	Size   uint64
}

// FileEntry names a regular file, Digest being its blob's.
type FileEntry struct {
	Name       string
	Digest     Digest
	Size       uint64
	Executable bool
}

// SymlinkEntry names a symbolic link.
type SymlinkEntry struct {
	Name   string
	Target string
}

// Size returns the number of entries below d, the value a DirectoryEntry
// pointing at d carries.
func (d *Directory) Size() uint64 {
	n := uint64(len(d.Directories) + len(d.Files) + len(d.Symlinks))
	for _, e := range d.Directories {
		n += e.Size
	}
	return n
}

// Digest returns the BLAKE3 of d's canonical encoding.
func (d *Directory) Digest() Digest { return Hash(d.Marshal()) }

// Entries returns d's entries as [Entry] values, all of a kind together:
// directories, then files, then symlinks.
func (d *Directory) Entries() []Entry {
	out := make([]Entry, 0, len(d.Directories)+len(d.Files)+len(d.Symlinks))
	for _, e := range d.Directories {
		out = append(out, Entry{Name: e.Name, Kind: KindDirectory, Digest: e.Digest, Size: e.Size})
	}
	for _, e := range d.Files {
		out = append(out, Entry{Name: e.Name, Kind: KindFile, Digest: e.Digest, Size: e.Size, Executable: e.Executable})
	}
	for _, e := range d.Symlinks {
		out = append(out, Entry{Name: e.Name, Kind: KindSymlink, Target: e.Target})
	}
	return out
}

// Add appends e to the list of its kind. It does not sort or validate;
// call Validate when the directory is complete.
func (d *Directory) Add(e Entry) {
	switch e.Kind {
	case KindDirectory:
		d.Directories = append(d.Directories, DirectoryEntry{Name: e.Name, Digest: e.Digest, Size: e.Size})
	case KindFile:
		d.Files = append(d.Files, FileEntry{Name: e.Name, Digest: e.Digest, Size: e.Size, Executable: e.Executable})
	case KindSymlink:
		d.Symlinks = append(d.Symlinks, SymlinkEntry{Name: e.Name, Target: e.Target})
	}
}

// ValidateName checks one entry name: non-empty, not "." or "..", no '/'
// or NUL, at most MaxNameLen bytes.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name of %d bytes, limit %d", ErrInvalid, len(name), MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q contains '/' or NUL", ErrInvalid, name)
	}
	return nil
}

// ValidateTarget checks a symlink target: non-empty, no NUL, at most
// MaxTargetLen bytes.
func ValidateTarget(target string) error {
	switch {
	case target == "":
		return fmt.Errorf("%w: empty symlink target", ErrInvalid)
	case len(target) > MaxTargetLen:
		return fmt.Errorf("%w: symlink target of %d bytes, limit %d", ErrInvalid, len(target), MaxTargetLen)
	case strings.IndexByte(target, 0) >= 0:
		return fmt.Errorf("%w: symlink target contains NUL", ErrInvalid)
	}
	return nil
}

// Validate checks the rules every directory must keep, whatever its source:
// valid names, each list strictly ascending, names unique across the three
// lists, valid symlink targets. (Digests are 32 bytes by type.)
func (d *Directory) Validate() error {
	seen := make(map[string]struct{}, len(d.Directories)+len(d.Files)+len(d.Symlinks))
	check := func(list string, i int, name, prev string) error {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("%s[%d]: %w", list, i, err)
		}
		if i > 0 && name <= prev {
			return fmt.Errorf("%w: %s[%d] %q does not sort after %q", ErrInvalid, list, i, name, prev)
		}
		if _, dup := seen[name]; dup {
			return fmt.Errorf("%w: %s[%d]: duplicate name %q", ErrInvalid, list, i, name)
		}
		seen[name] = struct{}{}
		return nil
	}
	prev := ""
	for i, e := range d.Directories {
		if err := check("directories", i, e.Name, prev); err != nil {
			return err
		}
		prev = e.Name
	}
	for i, e := range d.Files {
		if err := check("files", i, e.Name, prev); err != nil {
			return err
		}
		prev = e.Name
	}
	for i, e := range d.Symlinks {
		if err := check("symlinks", i, e.Name, prev); err != nil {
			return err
		}
		if err := ValidateTarget(e.Target); err != nil {
			return fmt.Errorf("symlinks[%d] %q: %w", i, e.Name, err)
		}
		prev = e.Name
	}
	return nil
}

// Protobuf field numbers of snix.castore.v1.Directory and its entries.
const (
	fieldDirectories = 1
	fieldFiles       = 2
	fieldSymlinks    = 3

	fieldName       = 1
	fieldDigest     = 2
	fieldSize       = 3
	fieldExecutable = 4
	fieldTarget     = 2
)

// Marshal returns d's canonical protobuf encoding (snix.castore.v1.Directory:
// fields in number order, default values omitted), the bytes its digest is
// computed over.
func (d *Directory) Marshal() []byte {
	var b, sub []byte
	for _, e := range d.Directories {
		sub = appendBytesField(sub[:0], fieldName, e.Name)
		sub = appendBytesField(sub, fieldDigest, string(e.Digest[:]))
		sub = appendVarintField(sub, fieldSize, e.Size)
		b = appendMessageField(b, fieldDirectories, sub)
	}
	for _, e := range d.Files {
		sub = appendBytesField(sub[:0], fieldName, e.Name)
		sub = appendBytesField(sub, fieldDigest, string(e.Digest[:]))
		sub = appendVarintField(sub, fieldSize, e.Size)
		if e.Executable {
			sub = appendVarintField(sub, fieldExecutable, 1)
		}
		b = appendMessageField(b, fieldFiles, sub)
	}
	for _, e := range d.Symlinks {
		sub = appendBytesField(sub[:0], fieldName, e.Name)
		sub = appendBytesField(sub, fieldTarget, e.Target)
		b = appendMessageField(b, fieldSymlinks, sub)
	}
	return b
}

func appendBytesField(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendMessageField(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// UnmarshalDirectory decodes a snix.castore.v1.Directory. It accepts any
// valid protobuf encoding (not only the canonical one) and does not
// validate; call Validate on the result. Unknown fields are an error, as
// they would change the digest without changing the directory.
func UnmarshalDirectory(b []byte) (*Directory, error) {
	d := new(Directory)
	err := forEachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		var e entryFields
		if err := e.decode(v, num); err != nil {
			return err
		}
		switch num {
		case fieldDirectories:
			dg, err := e.digest()
			if err != nil {
				return err
			}
			d.Directories = append(d.Directories, DirectoryEntry{Name: e.name, Digest: dg, Size: e.size})
		case fieldFiles:
			dg, err := e.digest()
			if err != nil {
				return err
			}
			d.Files = append(d.Files, FileEntry{Name: e.name, Digest: dg, Size: e.size, Executable: e.executable})
		case fieldSymlinks:
			d.Symlinks = append(d.Symlinks, SymlinkEntry{Name: e.name, Target: string(e.bytes2)})
		default:
			return fmt.Errorf("unknown field %d", num)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: directory encoding: %v", ErrCorrupt, err)
	}
	return d, nil
}

// entryFields collects the fields of a DirectoryEntry, FileEntry or
// SymlinkEntry; field 2 is the digest or the symlink target.
type entryFields struct {
	name       string
	bytes2     []byte
	size       uint64
	executable bool
}

func (e *entryFields) decode(b []byte, kind protowire.Number) error {
	return forEachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldName && typ == protowire.BytesType:
			e.name = string(v)
		case num == 2 && typ == protowire.BytesType:
			e.bytes2 = v
		case num == fieldSize && typ == protowire.VarintType && kind != fieldSymlinks:
			e.size = x
		case num == fieldExecutable && typ == protowire.VarintType && kind == fieldFiles:
			e.executable = x != 0
		default:
			return fmt.Errorf("unexpected field %d (wire type %d) in entry", num, typ)
		}
		return nil
	})
}

func (e *entryFields) digest() (Digest, error) {
	var d Digest
	if len(e.bytes2) != DigestSize {
		return d, fmt.Errorf("entry %q: digest of %d bytes", e.name, len(e.bytes2))
	}
	copy(d[:], e.bytes2)
	return d, nil
}

// forEachField walks the top-level fields of a protobuf message, passing
// bytes fields' contents as v and varints as x.
func forEachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			return fmt.Errorf("field %d: unsupported wire type %d", num, typ)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
