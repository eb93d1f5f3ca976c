package castore

import (
	"encoding/hex"
	"fmt"
)

// DigestSize is the size of a BLAKE3-256 digest in bytes.
const DigestSize = 32

// Digest is the BLAKE3-256 digest of a chunk, a blob or a directory's
// canonical encoding. It is a value: comparable and usable as a map key.
type Digest [DigestSize]byte

// String returns the digest as 64 lowercase hexadecimal digits.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses 64 hexadecimal digits.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*DigestSize {
		return d, fmt.Errorf("%w: digest %q: want %d hex digits, have %d", ErrInvalid, s, 2*DigestSize, len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("%w: digest %q: %v", ErrInvalid, s, err)
	}
	return d, nil
}

// DigestFromBytes converts a digest received as bytes (a protobuf field),
// refusing any length but 32.
func DigestFromBytes(b []byte) (Digest, error) {
	var d Digest
	if len(b) != DigestSize {
		return d, fmt.Errorf("%w: digest of %d bytes, want %d", ErrInvalid, len(b), DigestSize)
	}
	copy(d[:], b)
	return d, nil
}

// Hash returns the BLAKE3-256 digest of data. It is the one hash function of
// the store; see hash.go for the implementation in use.
func Hash(data []byte) Digest { return hashSum(data) }

// EmptyDigest is the digest of zero bytes (the empty blob).
var EmptyDigest = Hash(nil)
