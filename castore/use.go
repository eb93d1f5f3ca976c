package castore

import "context"

// UseKind is what RecordUse records a use of.
type UseKind int

// Kinds of RecordUse.
const (
	UseBlob UseKind = iota + 1
	UseDirectory
)

// UseRecorder is the optional power of stores that keep what clients use
// from a garbage collection (pebblestore.Store).
type UseRecorder interface {
	RecordUse(ctx context.Context, kind UseKind, d Digest) error
}

// RecordUse calls s.RecordUse when s has that power, and does nothing
// otherwise.
func RecordUse(ctx context.Context, s any, kind UseKind, d Digest) error {
	if r, ok := As[UseRecorder](s); ok {
		return r.RecordUse(ctx, kind, d)
	}
	return nil
}
