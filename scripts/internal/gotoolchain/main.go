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
