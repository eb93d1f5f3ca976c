// Command gotoolchain fetches a Go release as the benchmarks use it
// (bench.GoToolchain: the module proxy's golang.org/toolchain, laid out as
// an install with its executable bits) into DIR and prints the tree's
// path. For scripts: go run ./scripts/internal/gotoolchain DIR VERSION.
package main
