// Package server is the nixcas server process: it opens the embedded
// Pebble store and serves it on two listeners, gRPC (the snix castore and
// store services and nixcas.v1 sync, from server/grpcapi) and HTTP (the
// Nix binary-cache protocol from server/httpcache at "/", Prometheus
// metrics at "/metrics", health probes at "/healthz" and "/readyz"), until
// its context ends; then it stops gracefully and closes the store.
//
// Both listeners apply the same token policy (server/auth): without a push
// token, writes are refused when a read token is set or a listener is
// bound to a non-loopback address, unless Options.AllowAnonymousWrites.
// With Options.TLS both listeners serve TLS. With Options.Logger every
// HTTP request and gRPC call is logged when it ends (accesslog.go).
//
// Shutdown: the listeners close at once; calls and requests in progress
// get Options.ShutdownTimeout to finish, after which they are cancelled.
// A cancelled write leaves nothing visible that was not complete: chunks
// are verified before they are stored, a directory stream is stored only
// once it is validated whole, and a PathInfo, the only thing that makes a
// store path visible, is written last, in one batch, synced.
package server
