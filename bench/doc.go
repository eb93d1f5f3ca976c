// Package bench measures nixcas against the other ways of storing and
// serving the same NARs: corpus builders (real Go toolchain releases, and
// simulated rebuilds that rewrite store-path references), throughput runs
// beside their baselines (Speed: ingest and render beside nix-store
// --dump), the dedup comparison of storage strategies (Dedup: raw, xz,
// zstd, whole-file dedup, NAR-level chunking, nixcas at several chunk
// sizes, the zstd --long limit) with its report tables and charts, and Go
// benchmarks of the hot paths.
//
// Everything here measures; nothing here is used by the store itself.
package bench
