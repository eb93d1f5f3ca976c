// Package server is the nixcas server process: it opens the embedded
// Pebble store and serves it on two listeners, gRPC (the snix castore and
// store services and nixcas.v1 sync, from server/grpcapi) and HTTP (the
// Nix binary-cache protocol from server/httpcache at "/", Prometheus
// metrics at "/metrics"), until its context ends; then it stops
// gracefully and closes the store.
//
// Shutdown: the listeners close at once; calls and requests in progress
// get Options.ShutdownTimeout to finish, after which they are cancelled.
// A cancelled write leaves nothing visible that was not complete: chunks
// are verified before they are stored, a directory stream is stored only
// once it is validated whole, and a PathInfo, the only thing that makes a
// store path visible, is written last, in one batch, synced.
package server
