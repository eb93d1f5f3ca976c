package store

// Key kinds of the Nix layer's records in a MetaStore (pebblestore.Store
// keeps them beside its own kinds, which it refuses in SetMeta). The byte
// values are part of the on-disk layout: stores written before these
// moved here from castore open unchanged.
const (
	// KindPathInfo: 20-byte store path digest → PathInfo bytes.
	KindPathInfo byte = 'p'
	// KindNARHash: 32-byte NAR sha256 → 20-byte store path digest.
	KindNARHash byte = 'n'
	// KindNARFile: URL of an uploaded NAR file → 32-byte NAR sha256 and
	// its compression name.
	KindNARFile byte = 'u'
)
