package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/nixcas/nixcas/castore"
)

// metaKindFile keys the records of the files a binary cache keeps beside
// store paths: "<kind>/<name>" → the File, as JSON.
const metaKindFile byte = 'f'

// Kinds of files a binary cache keeps beside store paths, named by the
// directory Nix puts them in.
const (
	// FileLog is a build log, "log/<drv base name>".
	FileLog = "log"
	// FileDebugInfo is a debug info link, "debuginfo/<build id>[.debug]",
	// a JSON object naming a NAR and the member in it.
	FileDebugInfo = "debuginfo"
	// FileRealisation is the output of a content-addressed derivation,
	// "realisations/<hash algo>:<hash modulo>!<output>.doi", as JSON.
	FileRealisation = "realisations"
)

var (
	debugInfoName   = regexp.MustCompile(`^[0-9a-f]{2,128}(\.debug)?$`)
	realisationName = regexp.MustCompile(`^sha256:[0-9a-f]{64}![a-zA-Z0-9+\-_?=][a-zA-Z0-9+\-._?=]{0,210}\.doi$`)
)

// ValidateFileName checks the name of a file of a kind: a log is named by
// a store path base name, a debug info link by a build ID in lower-case
// hex (with the ".debug" Nix 2.8 appends), a realisation by
// "sha256:<64 hex>!<output name>.doi".
func ValidateFileName(kind, name string) error {
	switch kind {
	case FileLog:
		if err := ValidateBaseName(name); err != nil {
			return fmt.Errorf("%w: log name %q: %v", ErrInvalid, name, err)
		}
	case FileDebugInfo:
		if !debugInfoName.MatchString(name) {
			return fmt.Errorf("%w: debug info name %q is not a build ID in lower-case hex", ErrInvalid, name)
		}
	case FileRealisation:
		if !realisationName.MatchString(name) {
			return fmt.Errorf("%w: realisation name %q is not sha256:<64 hex>!<output>.doi", ErrInvalid, name)
		}
	default:
		return fmt.Errorf("%w: file kind %q", ErrInvalid, kind)
	}
	return nil
}

// File is a file kept beside store paths, as it was uploaded: its bytes
// are a castore blob, kept with the Content-Type and Content-Encoding
// they came with.
type File struct {
	ContentType     string
	ContentEncoding string
	Blob            castore.Digest
	Size            uint64
}

// fileRecord is File as stored.
type fileRecord struct {
	ContentType     string `json:"contentType,omitempty"`
	ContentEncoding string `json:"contentEncoding,omitempty"`
	Blob            string `json:"blob"`
	Size            uint64 `json:"size"`
}

func fileKey(kind, name string) []byte { return []byte(kind + "/" + name) }

// PutFile records f as the file name of kind, replacing any file of that
// name, durably, after checking the name and that f's blob is all in the
// castore (ErrIncomplete otherwise).
func (x *Index) PutFile(ctx context.Context, kind, name string, f File) error {
	if err := ValidateFileName(kind, name); err != nil {
		return err
	}
	if err := CheckTree(ctx, x.cas, castore.Entry{Kind: castore.KindFile, Digest: f.Blob, Size: f.Size}); err != nil {
		return fmt.Errorf("%s/%s: %w", kind, name, err)
	}
	v, err := json.Marshal(fileRecord{ContentType: f.ContentType, ContentEncoding: f.ContentEncoding, Blob: hex.EncodeToString(f.Blob[:]), Size: f.Size})
	if err != nil {
		return err
	}
	if err := x.meta.SetMeta(ctx, castore.MetaRecord{Kind: metaKindFile, Key: fileKey(kind, name), Value: v}); err != nil {
		return err
	}
	return x.meta.Sync(ctx)
}

// GetFile returns the file name of kind; a missing one is ErrNotFound.
func (x *Index) GetFile(ctx context.Context, kind, name string) (File, error) {
	if err := ValidateFileName(kind, name); err != nil {
		return File{}, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	v, err := x.meta.GetMeta(ctx, metaKindFile, fileKey(kind, name))
	if errors.Is(err, castore.ErrNotFound) {
		return File{}, fmt.Errorf("%w: %s/%s", ErrNotFound, kind, name)
	}
	if err != nil {
		return File{}, err
	}
	var r fileRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return File{}, fmt.Errorf("%w: stored %s/%s: %v", castore.ErrCorrupt, kind, name, err)
	}
	f := File{ContentType: r.ContentType, ContentEncoding: r.ContentEncoding, Size: r.Size}
	b, err := hex.DecodeString(r.Blob)
	if err != nil || len(b) != len(f.Blob) {
		return File{}, fmt.Errorf("%w: stored %s/%s: blob digest %q", castore.ErrCorrupt, kind, name, r.Blob)
	}
	copy(f.Blob[:], b)
	return f, nil
}
