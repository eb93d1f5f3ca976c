package castore

import "errors"

var (
	// ErrNotFound: the chunk, blob or directory is not in the store.
	ErrNotFound = errors.New("castore: not found")
	// ErrCorrupt: bytes do not match their digest, or stored data cannot
	// be decoded.
	ErrCorrupt = errors.New("castore: corrupt")
	// ErrInvalid: a request or a directory breaks the rules (bad name,
	// order, size, digest length, ...).
	ErrInvalid = errors.New("castore: invalid")
	// ErrNoSpace: the file system holding the store has less free space
	// than the store keeps in reserve, so a write was refused before it
	// began. Reads go on; writes succeed again once space is freed.
	ErrNoSpace = errors.New("castore: not enough free disk space")
	// ErrUnavailable: a backend the store depends on (object storage
	// holding its frames) could not be reached or failed to answer. Nothing
	// was read or written; the same call may succeed once it is back.
	ErrUnavailable = errors.New("castore: backend unavailable")
)
