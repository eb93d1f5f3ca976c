package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/nixcas/nixcas/bench"
)

func main() {
	conns := flag.Int("c", 16, "concurrent connections")
	dur := flag.Duration("d", 5*time.Second, "how long to send requests")
	path := flag.String("path", "", "path of the narinfo under each base URL, such as HASH.narinfo")
	flag.Parse()
	if *path == "" || flag.NArg() == 0 || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "usage: narinfoload [-c N] [-d DURATION] -path HASH.narinfo http://HOST:PORT...")
		os.Exit(2)
	}
	if err := run(flag.Args(), *path, *conns, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "narinfoload:", err)
		os.Exit(1)
	}
}

func run(bases []string, path string, conns int, dur time.Duration) error {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	next := func(rng *rand.Rand) string { return bases[rng.IntN(len(bases))] + "/" + path }
	check := func(url string, body []byte) error {
		if !bytes.Contains(body, []byte("StorePath: ")) {
			return fmt.Errorf("GET %s: not a narinfo: %.200q", url, body)
		}
		return nil
	}
	lat, err := bench.LoadGETs(context.Background(), &http.Client{Transport: tr}, conns, dur, next, check)
	if err != nil {
		return err
	}
	if lat.Requests == 0 {
		return fmt.Errorf("no request finished within %v", dur)
	}
	fmt.Printf("%d requests in %.1f s: %.0f req/s, latency p50 %.0f µs p99 %.0f µs (%d connections over %d servers)\n",
		lat.Requests, dur.Seconds(), lat.RPS, lat.P50us, lat.P99us, conns, len(bases))
	return nil
}
