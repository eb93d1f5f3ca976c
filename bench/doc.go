// Package bench measures nixcas against the other ways of storing and
// serving the same NARs: corpus builders (real Go toolchain releases),
// throughput runs beside their baselines (nix-store --dump), and Go
// benchmarks of the hot paths.
//
// Everything here measures; nothing here is used by the store itself.
package bench
