//go:build blake3luke

package castore

import (
	"hash"

	"lukechampine.com/blake3"
)

// HashImplementation names the BLAKE3 implementation compiled in.
const HashImplementation = "lukechampine.com/blake3"

func hashSum(data []byte) Digest { return blake3.Sum256(data) }

// NewHasher returns a streaming BLAKE3-256 hasher whose Sum matches [Hash].
func NewHasher() hash.Hash { return blake3.New(DigestSize, nil) }
