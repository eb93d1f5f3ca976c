// Package auth decides which requests a nixcas server lets through, from
// the bearer tokens it is configured with. It is the one place both edges
// (server/grpcapi and server/httpcache) compare tokens, in constant time;
// each edge only extracts the token from its request and translates the
// errors to its own codes.
//
// The rules, for a [Policy]:
//
//   - A read needs the read token (or the push token) when a read token is
//     set; otherwise anyone may read.
//   - A write needs the push token when one is set. When none is set,
//     writes are refused if a read token is set (a server that guards its
//     reads does not let anyone write) or if RefuseAnonymousWrites is set
//     (what `nixcas serve` does on a non-loopback address unless told
//     otherwise); otherwise anyone may write.
//
// Errors: [ErrTokenRequired] when a token is needed and none was given
// (HTTP 401, gRPC UNAUTHENTICATED), [ErrWrongToken] when the token given
// does not open the request (HTTP 403, gRPC PERMISSION_DENIED), and
// [ErrWritesDisabled] when no token could (HTTP 403, gRPC
// PERMISSION_DENIED).
package auth
