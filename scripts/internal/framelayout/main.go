package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	xzBytes := flag.Int64("xz-bytes", 0, "the NARs' total size compressed with xz, the ratio's denominator (required)")
	only := flag.String("only", "", "comma-separated strategy rows to run, as numbered in the table from 1 (default all)")
	jobs := flag.Int("j", 1, "strategies run at once, each on a thread of its own")
	flag.Parse()
	if err := run(*xzBytes, *only, *jobs, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "framelayout:", err)
		os.Exit(1)
	}
}

func run(xzBytes int64, only string, jobs int, nars []string) error {
	if xzBytes <= 0 || len(nars) == 0 || jobs < 1 {
		return fmt.Errorf("usage: framelayout -xz-bytes N [-only 1,2,...] [-j N] NAR...")
	}
	t0 := time.Now()
	c, err := readCorpus(nars)
	if err != nil {
		return err
	}
	fmt.Printf("%d NARs, %d bytes; %d chunk references, %d distinct chunks, %d bytes; %d files with new chunks; read in %.1f s\n\n",
		len(c.nars), c.narBytes, c.refs, len(c.chunks), len(c.arena), len(c.files), time.Since(t0).Seconds())

	all := strategies()
	var rows []int
	if only == "" {
		for i := range all {
			rows = append(rows, i)
		}
	} else {
		for _, f := range strings.Split(only, ",") {
			var i int
			if _, err := fmt.Sscan(f, &i); err != nil || i < 1 || i > len(all) {
				return fmt.Errorf("-only %q: rows are 1 to %d", only, len(all))
			}
			rows = append(rows, i-1)
		}
	}
	results := make([]*result, len(all))
	errs := make([]error, len(all))
	todo := make(chan int)
	var wg sync.WaitGroup
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range todo {
				results[i], errs[i] = c.run(all[i])
			}
		}()
	}
	for _, i := range rows {
		todo <- i
	}
	close(todo)
	wg.Wait()
	for _, i := range rows {
		if errs[i] != nil {
			return errs[i]
		}
	}

	fmt.Println("| # | strategy | frame size | open frames | frames | stored MB | ÷ xz | zstd CPU ns/NAR B | class CPU ns/NAR B | decode CPU per first chunk read, ms | largest frame MiB | open frames' peak MiB | decoded ÷ file bytes, each file read alone | the same, files of 1 MiB or more |")
	fmt.Println("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	nb := float64(c.narBytes)
	for _, i := range rows {
		r := results[i]
		fmt.Printf("| %d | %s | %s | %d | %d | %.1f | %.3f | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %.2f |\n",
			i+1, r.s.name, sizeText(r), r.maxOpen, r.frames, float64(r.stored)/1e6, float64(r.stored)/float64(xzBytes),
			float64(r.zstdCPU)/nb, float64(r.classifyCPU)/nb,
			float64(r.chunkReadCPU)/float64(len(c.chunks))/1e6, float64(r.maxDecoded)/(1<<20), float64(r.maxOpenBytes)/(1<<20), float64(r.fileReadBytes)/float64(len(c.arena)),
			float64(r.largeFileReadBytes)/float64(max(1, r.largeFileBytes)))
	}
	fmt.Println()
	fmt.Printf("Per class (strategies with 2 to %d classes):\n", maxClassRows)
	fmt.Println()
	fmt.Println("| # | strategy | class | frames | decoded MB | stored MB | stored ÷ decoded |")
	fmt.Println("|---:|---|---|---:|---:|---:|---:|")
	for _, i := range rows {
		r := results[i]
		if r.s.classOf == nil || len(r.classes) > maxClassRows {
			continue
		}
		keys := make([]int, 0, len(r.classes))
		for k := range r.classes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ct := r.classes[k]
			fmt.Printf("| %d | %s | %s | %d | %.1f | %.1f | %.3f |\n", i+1, r.s.name, r.s.className(k), ct.frames,
				float64(ct.decoded)/1e6, float64(ct.stored)/1e6, float64(ct.stored)/float64(ct.decoded))
		}
	}
	return nil
}

// maxClassRows is the most classes a strategy may have to get rows in the
// per-class table.
const maxClassRows = 8

// sizeText says a strategy's frame sizes: one size, or each class's.
func sizeText(r *result) string {
	sizes := map[int]bool{}
	for k := range r.classes {
		sizes[r.s.size(k)] = true
	}
	if len(sizes) <= 1 {
		return fmt.Sprintf("%d MiB", r.s.size(0)>>20)
	}
	var parts []string
	keys := make([]int, 0, len(r.classes))
	for k := range r.classes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", r.s.className(k), r.s.size(k)>>20))
	}
	return strings.Join(parts, ", ") + " MiB"
}
