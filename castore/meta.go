package castore

// MetaRecord is a record of a kind the store itself does not use (such as
// store.KindPathInfo), for the SetMeta of a store that keeps such records
// (pebblestore.Store).
type MetaRecord struct {
	Kind   byte
	Key    []byte
	Value  []byte
	Delete bool // remove the key instead of setting it
}
