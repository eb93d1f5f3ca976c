package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
)

// SpeedOptions configure a throughput run.
type SpeedOptions struct {
	Tree    string // the tree to measure (made into a NAR by nix-store --dump)
	WorkDir string // scratch space for the NAR and the store
	Runs    int    // repetitions of each timed step; the best is kept
	Writer  castore.WriterOptions
	Log     io.Writer // progress lines
}

// Measure is one timed step.
type Measure struct {
	Name     string        `json:"name"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"nanoseconds"`
	Baseline string        `json:"baseline,omitempty"` // the Measure this one is compared with, if any
	// Load is the 1-minute load average when the step ended.
	Load float64 `json:"loadAverage"`
}

// MBps returns the throughput in MB/s (10^6 bytes per second).
func (m Measure) MBps() float64 { return float64(m.Bytes) / m.Duration.Seconds() / 1e6 }

// SpeedResult holds the steps of a throughput run.
type SpeedResult struct {
	NARSize  int64     `json:"narSize"`
	Measures []Measure `json:"measures"`
}

// WriteJSON writes the result to path.
func (r *SpeedResult) WriteJSON(path string) error { return marshalJSON(path, r) }

// add appends a measure, stamped with the load average, and returns it.
func (r *SpeedResult) add(m Measure) Measure {
	m.Load = loadAverage()
	r.Measures = append(r.Measures, m)
	return m
}

// Speed measures, on one tree: nix-store --dump to a discarding sink (the
// baseline, again before each tier's renders); ingesting its NAR into a
// fresh Pebble store, without and with packing every chunk into hot
// frames; rendering the NAR back from the warm store to a discarding sink,
// from hot frames, then, after compacting the store, from cold ones, each
// first with no decoded frame kept (every frame decoded) and then warm
// (from the decoded frames the first render kept on disk); and the median
// render time of a NAR of one 1 KiB file from each tier. Each rendered
// NAR is checked against the dump's SHA-256, first and warm, outside the
// timings. Every step records the load average as it ended.
func Speed(ctx context.Context, o SpeedOptions) (*SpeedResult, error) {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	nar := filepath.Join(o.WorkDir, "tree.nar")
	logf("dumping %s with nix-store --dump", o.Tree)
	if err := dumpTo(ctx, o.Tree, nar); err != nil {
		return nil, err
	}
	want, size, err := fileSha256(nar)
	if err != nil {
		return nil, err
	}
	res := &SpeedResult{NARSize: size}

	dump, err := best(o.Runs, func() error { return dumpTo(ctx, o.Tree, os.DevNull) })
	if err != nil {
		return nil, err
	}
	m := res.add(Measure{Name: "nix-store --dump", Bytes: size, Duration: dump})
	logf("nix-store --dump: %.0f MB/s", m.MBps())

	// Each ingest goes into a fresh store, opened before and closed after
	// the time taken: a server opens its store once.
	var store *pebblestore.Store
	var storeDir string
	run := 0
	ingest, err := bestTimed(o.Runs, func() (time.Duration, error) {
		if store != nil {
			store.Close()
		}
		run++
		storeDir = filepath.Join(o.WorkDir, fmt.Sprintf("store-%d", run))
		os.RemoveAll(storeDir)
		if store, err = pebblestore.Open(storeDir, pebblestore.Options{}); err != nil {
			return 0, err
		}
		return timedIngest(ctx, nar, store, o.Writer, false)
	})
	if err != nil {
		return nil, err
	}
	defer func() { store.Close() }()
	m = res.add(Measure{Name: "nixcas ingest (fresh store)", Bytes: size, Duration: ingest})
	logf("ingest: %.0f MB/s", m.MBps())

	// Ingest returns once every chunk is stored (inline, queued); the
	// packer writes hot frames behind it. Ingest and packing everything,
	// timed together, is the rate a store sustains.
	packed, err := bestTimed(o.Runs, func() (time.Duration, error) {
		dir := filepath.Join(o.WorkDir, "store-packed")
		os.RemoveAll(dir)
		s, err := pebblestore.Open(dir, pebblestore.Options{})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		return timedIngest(ctx, nar, s, o.Writer, true)
	})
	if err != nil {
		return nil, err
	}
	m = res.add(Measure{Name: "nixcas ingest + pack into hot frames", Bytes: size, Duration: packed})
	logf("ingest + pack: %.0f MB/s", m.MBps())

	f, err := os.Open(nar)
	if err != nil {
		return nil, err
	}
	r, err := narrender.Ingest(ctx, f, store, o.Writer) // the same NAR again: the root to render
	f.Close()
	if err != nil {
		return nil, err
	}
	small, err := narrender.Ingest(ctx, bytes.NewReader(smallNAR()), store, o.Writer)
	if err != nil {
		return nil, err
	}
	// A warm store at rest: every chunk packed, the memtable flushed, so
	// renders read what a long-running server reads (and the flush does
	// not compete with them).
	if err := store.Flush(ctx); err != nil {
		return nil, err
	}
	// reopen closes the store and opens it again, as a server restarts:
	// the decoded frames in memory are gone; with dropDecoded, those on
	// disk too.
	reopen := func(dropDecoded bool) error {
		if err := store.Close(); err != nil {
			return err
		}
		if dropDecoded {
			if err := os.RemoveAll(filepath.Join(storeDir, "decoded")); err != nil {
				return err
			}
		}
		store, err = pebblestore.Open(storeDir, pebblestore.Options{})
		return err
	}
	checkRender := func(what string) error {
		h := sha256.New()
		if err := narrender.Render(ctx, h, store, r.Root); err != nil {
			return err
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			return fmt.Errorf("bench: NAR rendered %s has sha256 %x, nix-store --dump %x", what, got, want)
		}
		return nil
	}
	render := func() error { return narrender.Render(ctx, io.Discard, store, r.Root) }
	// renderTier measures, beside a dump of the same moment: the first
	// render of a warm store (its files in the page cache) with no decoded
	// frame kept, every frame decoded; then the warm render, from the
	// decoded frames the first render left on disk. Both are checked
	// against the dump's hash once.
	renderTier := func(tier string) error {
		dump, err := best(o.Runs, func() error { return dumpTo(ctx, o.Tree, os.DevNull) })
		if err != nil {
			return err
		}
		dumpName := "nix-store --dump (before the " + tier + " renders)"
		m := res.add(Measure{Name: dumpName, Bytes: size, Duration: dump})
		logf("%s: %.0f MB/s", dumpName, m.MBps())
		if err := reopen(true); err != nil {
			return err
		}
		if err := checkRender("from the " + tier + " tier, first"); err != nil {
			return err
		}
		first, err := bestTimed(o.Runs, func() (time.Duration, error) {
			if err := reopen(true); err != nil {
				return 0, err
			}
			start := time.Now()
			if err := render(); err != nil {
				return 0, err
			}
			// The time to decode and render, not the writes of decoded
			// frames that Close waits for.
			d := time.Since(start)
			return d, reopen(false)
		})
		if err != nil {
			return err
		}
		m = res.add(Measure{Name: "nixcas render (" + tier + " tier, first: no decoded frames kept)", Bytes: size, Duration: first, Baseline: dumpName})
		logf("first render from the %s tier: %.0f MB/s", tier, m.MBps())
		if err := checkRender("from the " + tier + " tier, warm"); err != nil {
			return err
		}
		warm, err := best(o.Runs, render)
		if err != nil {
			return err
		}
		m = res.add(Measure{Name: "nixcas render (" + tier + " tier, warm: decoded frames kept)", Bytes: size, Duration: warm, Baseline: dumpName})
		logf("warm render from the %s tier: %.0f MB/s (decoded cache %+v)", tier, m.MBps(), store.DecodedCacheStats())
		p50, err := smallRenderP50(ctx, store, small.Root)
		if err != nil {
			return err
		}
		res.add(Measure{Name: "nixcas render of a one-file 1 KiB NAR, p50 of 1000 (" + tier + " tier)", Bytes: int64(small.NARSize), Duration: p50})
		return nil
	}
	if err := renderTier("hot"); err != nil {
		return nil, err
	}

	start := time.Now()
	cr, err := store.Compact(ctx, pebblestore.CompactOptions{})
	if err != nil {
		return nil, err
	}
	m = res.add(Measure{Name: "nixcas store compact (zstd best, 4 MiB frames; decoded bytes)", Bytes: int64(cr.DecodedBytes), Duration: time.Since(start)})
	logf("compact: %.0f MB/s", m.MBps())
	if err := store.Flush(ctx); err != nil {
		return nil, err
	}
	if err := renderTier("cold"); err != nil {
		return nil, err
	}
	return res, nil
}

// smallNAR returns the NAR of one regular file of 1 KiB.
func smallNAR() []byte {
	var b bytes.Buffer
	str := func(s string) {
		var n [8]byte
		n[0], n[1] = byte(len(s)), byte(len(s)>>8)
		b.Write(n[:])
		b.WriteString(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	content := bytes.Repeat([]byte("0123456789abcdef"), 64)
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents", string(content), ")"} {
		str(s)
	}
	return b.Bytes()
}

// smallRenderP50 renders root 1000 times and returns the median time.
func smallRenderP50(ctx context.Context, s *pebblestore.Store, root castore.Entry) (time.Duration, error) {
	times := make([]time.Duration, 1000)
	for i := range times {
		start := time.Now()
		if err := narrender.Render(ctx, io.Discard, s, root); err != nil {
			return 0, err
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

// WriteMarkdown prints the result as a Markdown table.
func (r *SpeedResult) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "NAR size: %.1f MiB\n\n", float64(r.NARSize)/(1<<20))
	fmt.Fprintln(w, "| step | MB/s | time | vs baseline | load |")
	fmt.Fprintln(w, "|---|---:|---:|---|---:|")
	by := map[string]Measure{}
	for _, m := range r.Measures {
		by[m.Name] = m
	}
	for _, m := range r.Measures {
		vs := ""
		if b, ok := by[m.Baseline]; ok {
			vs = fmt.Sprintf("%.2fx %s", m.MBps()/b.MBps(), b.Name)
		}
		d := m.Duration.Round(time.Millisecond)
		if m.Duration < 10*time.Millisecond {
			d = m.Duration.Round(time.Microsecond)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %.1f |\n", m.Name, m.MBps(), d, vs, m.Load)
	}
}

// bestTimed runs f n times and returns the shortest of the durations it
// returns.
func bestTimed(n int, f func() (time.Duration, error)) (time.Duration, error) {
	var min time.Duration
	for i := range n {
		d, err := f()
		if err != nil {
			return 0, err
		}
		if i == 0 || d < min {
			min = d
		}
	}
	return min, nil
}

// timedIngest ingests the NAR file nar into s and returns the time it
// took, with every queued chunk packed into hot frames when pack is set.
func timedIngest(ctx context.Context, nar string, s *pebblestore.Store, wo castore.WriterOptions, pack bool) (time.Duration, error) {
	f, err := os.Open(nar)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	if _, err := narrender.Ingest(ctx, f, s, wo); err != nil {
		return 0, err
	}
	if pack {
		if err := s.PackPending(ctx); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// best runs f n times and returns the shortest duration.
func best(n int, f func() error) (time.Duration, error) {
	var min time.Duration
	for i := range n {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		if d := time.Since(start); i == 0 || d < min {
			min = d
		}
	}
	return min, nil
}

// dumpTo runs nix-store --dump tree > out.
func dumpTo(ctx context.Context, tree, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "nix-store", "--dump", tree)
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench: nix-store --dump %s: %w: %s", tree, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return f.Close()
}

func fileSha256(path string) ([sha256.Size]byte, int64, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	h.Sum(sum[:0])
	return sum, n, err
}
