// Command gotoolchain fetches a Go release as the benchmarks use it
// (bench.GoToolchain: the module proxy's golang.org/toolchain, laid out as
// an install with its executable bits) into DIR and prints the tree's
// path. For scripts: go run ./scripts/internal/gotoolchain DIR VERSION.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nixcas/nixcas/bench"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gotoolchain DIR VERSION")
		os.Exit(2)
	}
	tree, err := bench.GoToolchain(context.Background(), os.Args[2], os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotoolchain:", err)
		os.Exit(1)
	}
	fmt.Println(tree)
}
