package castore

import (
	"fmt"

	"github.com/nixcas/nixcas/proto/castorepb"
)

// EntryToProto converts e to its wire form.
func EntryToProto(e Entry) *castorepb.Entry {
	switch e.Kind {
	case KindDirectory:
		return &castorepb.Entry{Entry: &castorepb.Entry_Directory{Directory: &castorepb.DirectoryEntry{
			Name: []byte(e.Name), Digest: e.Digest[:], Size: e.Size}}}
	case KindFile:
		return &castorepb.Entry{Entry: &castorepb.Entry_File{File: &castorepb.FileEntry{
			Name: []byte(e.Name), Digest: e.Digest[:], Size: e.Size, Executable: e.Executable}}}
	case KindSymlink:
		return &castorepb.Entry{Entry: &castorepb.Entry_Symlink{Symlink: &castorepb.SymlinkEntry{
			Name: []byte(e.Name), Target: []byte(e.Target)}}}
	}
	return &castorepb.Entry{}
}

// EntryFromProto converts an entry received on the wire, checking its
// digest length and, for a symlink, its target. The name is not checked:
// a root entry's name is empty, a directory's entries' are checked by
// Directory.Validate.
func EntryFromProto(p *castorepb.Entry) (Entry, error) {
	switch n := p.GetEntry().(type) {
	case *castorepb.Entry_Directory:
		d, err := DigestFromBytes(n.Directory.GetDigest())
		if err != nil {
			return Entry{}, fmt.Errorf("directory entry %q: %w", n.Directory.GetName(), err)
		}
		return Entry{Name: string(n.Directory.GetName()), Kind: KindDirectory, Digest: d, Size: n.Directory.GetSize()}, nil
	case *castorepb.Entry_File:
		d, err := DigestFromBytes(n.File.GetDigest())
		if err != nil {
			return Entry{}, fmt.Errorf("file entry %q: %w", n.File.GetName(), err)
		}
		return Entry{Name: string(n.File.GetName()), Kind: KindFile, Digest: d, Size: n.File.GetSize(), Executable: n.File.GetExecutable()}, nil
	case *castorepb.Entry_Symlink:
		e := Entry{Name: string(n.Symlink.GetName()), Kind: KindSymlink, Target: string(n.Symlink.GetTarget())}
		if err := ValidateTarget(e.Target); err != nil {
			return Entry{}, fmt.Errorf("symlink entry %q: %w", e.Name, err)
		}
		return e, nil
	}
	return Entry{}, fmt.Errorf("%w: entry of no kind", ErrInvalid)
}

// DirectoryToProto converts d to its wire form.
func DirectoryToProto(d *Directory) *castorepb.Directory {
	p := &castorepb.Directory{
		Directories: make([]*castorepb.DirectoryEntry, len(d.Directories)),
		Files:       make([]*castorepb.FileEntry, len(d.Files)),
		Symlinks:    make([]*castorepb.SymlinkEntry, len(d.Symlinks)),
	}
	for i, e := range d.Directories {
		p.Directories[i] = &castorepb.DirectoryEntry{Name: []byte(e.Name), Digest: e.Digest[:], Size: e.Size}
	}
	for i, e := range d.Files {
		p.Files[i] = &castorepb.FileEntry{Name: []byte(e.Name), Digest: e.Digest[:], Size: e.Size, Executable: e.Executable}
	}
	for i, e := range d.Symlinks {
		p.Symlinks[i] = &castorepb.SymlinkEntry{Name: []byte(e.Name), Target: []byte(e.Target)}
	}
	return p
}

// DirectoryFromProto converts a directory received on the wire and
// validates it.
func DirectoryFromProto(p *castorepb.Directory) (*Directory, error) {
	d := &Directory{
		Directories: make([]DirectoryEntry, len(p.GetDirectories())),
		Files:       make([]FileEntry, len(p.GetFiles())),
		Symlinks:    make([]SymlinkEntry, len(p.GetSymlinks())),
	}
	var err error
	for i, e := range p.GetDirectories() {
		d.Directories[i] = DirectoryEntry{Name: string(e.GetName()), Size: e.GetSize()}
		if d.Directories[i].Digest, err = DigestFromBytes(e.GetDigest()); err != nil {
			return nil, fmt.Errorf("directories[%d] %q: %w", i, e.GetName(), err)
		}
	}
	for i, e := range p.GetFiles() {
		d.Files[i] = FileEntry{Name: string(e.GetName()), Size: e.GetSize(), Executable: e.GetExecutable()}
		if d.Files[i].Digest, err = DigestFromBytes(e.GetDigest()); err != nil {
			return nil, fmt.Errorf("files[%d] %q: %w", i, e.GetName(), err)
		}
	}
	for i, e := range p.GetSymlinks() {
		d.Symlinks[i] = SymlinkEntry{Name: string(e.GetName()), Target: string(e.GetTarget())}
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}
