// Package wrap holds the castore decorators that stores are composed of:
// [ReadOnly], [Counting], [Retrying] and [ReadThrough] (castore.Verifying,
// older, lives in castore itself). Each implements the castore interfaces
// of what it wraps, has an Unwrap method, and so passes the optional
// powers of the store underneath through castore.As; a decorator that must
// see a power's calls (ReadOnly refusing DeleteChunk, Counting counting
// PutEncodedChunk) implements that power itself.
//
// They are one package rather than one each (kopia's way) because each is
// a page long and they share nothing but castore's exported API: the
// package only uses what any other package could, which is the point of
// castore.As.
//
// The proxy is a composition of them: the Nix binary cache handler over
// ReadThrough(local Pebble store, Retrying(gRPC store of the upstream)).
// Every decorator runs the castoretest conformance suite.
package wrap
