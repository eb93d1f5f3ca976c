//go:build !blake3luke

package castore

import (
	"hash"

	"github.com/zeebo/blake3"
)

// HashImplementation names the BLAKE3 implementation compiled in. Build with
// -tags blake3luke to use lukechampine.com/blake3 instead (bench/ compares
// the two end to end).
const HashImplementation = "github.com/zeebo/blake3"

func hashSum(data []byte) Digest { return blake3.Sum256(data) }

// NewHasher returns a streaming BLAKE3-256 hasher whose Sum matches [Hash].
func NewHasher() hash.Hash { return blake3.New() }
