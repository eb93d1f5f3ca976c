package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
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
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
		wg        sync.WaitGroup
	)
	start := time.Now()
	for i := range conns {
		url := bases[i%len(bases)] + "/" + path
		// One client per connection: each keeps its own connection alive.
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				err := get(ctx, client, url)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	if len(latencies) == 0 {
		return fmt.Errorf("no request finished within %v", dur)
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	fmt.Printf("%d requests in %.1f s: %.0f req/s, latency p50 %v p99 %v max %v (%d connections over %d servers)\n",
		len(latencies), elapsed.Seconds(), float64(len(latencies))/elapsed.Seconds(),
		pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), latencies[len(latencies)-1].Round(time.Microsecond),
		conns, len(bases))
	return nil
}

func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("StorePath: ")) {
		return fmt.Errorf("GET %s: %s: %.200q", url, resp.Status, body)
	}
	return nil
}
