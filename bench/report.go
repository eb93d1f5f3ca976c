package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// WriteMarkdown prints the result as Markdown: stored bytes per strategy,
// bytes each input added, and what each strategy counts.
func (r *DedupResult) WriteMarkdown(w io.Writer) {
	raw := r.RawBytes()
	fmt.Fprintf(w, "%d NARs, %s MB in all (MB = 10^6 bytes). Wall time %s with GOMAXPROCS %d; CPU time %.0f s in the nixcas process (of which %.1f s packing the last hot frames after each NAR and %.1f s compacting), %.0f s in compressor processes. Peak RSS of the nixcas process: %s MB.\n\n",
		len(r.Inputs), fmtMB(raw), r.Wall.Round(time.Second), r.CPUs, r.GoCPU.Seconds(), r.FlushCPU.Seconds(), r.CompactCPU.Seconds(),
		r.ChildCPU.Seconds(), fmtMB(r.PeakRSS))
	fmt.Fprintf(w, "Framed stores: hot frames of %s at zstd level %s; nixcas-compact: cold frames of %s at zstd level %s, runs merged %d at a time; its compactions rewrote %s MB (uncompressed) in all.\n\n",
		fmtMiB(r.Frames.Size), r.Frames.Level, fmtMiB(r.Compact.FrameSize), r.Compact.Level, r.Compact.FanOut, fmtMB(int64(r.CompactRewrittenBytes)))

	xz := r.Strategy(StrategyXZ)
	fmt.Fprintln(w, "| strategy | stored MB | % of raw | raw ÷ stored | stored ÷ xz | uncounted metadata MB | MB/s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, s := range r.Strategies {
		meta := "–"
		if s.MetaBytes >= 0 {
			meta = fmtMB(s.MetaBytes)
		}
		speed := "–"
		if s.Time > 0 {
			basis := "busy"
			if s.CPUTime {
				basis = "CPU"
			}
			speed = fmt.Sprintf("%s (%s)", fmtRate(mbps(raw, s.Time)), basis)
		}
		byXZ := "–"
		if xz != nil && xz.StoredBytes > 0 {
			byXZ = fmt.Sprintf("%.2f", float64(s.StoredBytes)/float64(xz.StoredBytes))
		}
		fmt.Fprintf(w, "| %s | %s | %.1f%% | %.2f | %s | %s | %s |\n", s.Name, fmtMB(s.StoredBytes),
			100*float64(s.StoredBytes)/float64(raw), float64(raw)/float64(s.StoredBytes), byXZ, meta, speed)
	}

	fmt.Fprintln(w, "\nBytes added by each input (MB):")
	fmt.Fprintln(w)
	head := []string{"strategy"}
	for _, in := range r.Inputs {
		head = append(head, in.Name)
	}
	fmt.Fprintf(w, "| %s |\n|---|%s\n", strings.Join(head, " | "), strings.Repeat("---:|", len(r.Inputs)))
	for _, s := range r.Strategies {
		row := []string{s.Name}
		for _, a := range s.AddedBytes {
			row = append(row, fmtMB(a))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	if xz != nil {
		fmt.Fprintln(w, "\nBytes added by each input, as a share of what xz added for it:")
		fmt.Fprintln(w)
		fmt.Fprintf(w, "| %s |\n|---|%s\n", strings.Join(head, " | "), strings.Repeat("---:|", len(r.Inputs)))
		for _, s := range r.Strategies {
			if !strings.HasPrefix(s.Name, "nixcas") && s.Name != StrategyLimitZstdLong {
				continue
			}
			row := []string{s.Name}
			for k, a := range s.AddedBytes {
				cell := "–"
				if x := xz.AddedBytes[k]; x > 0 {
					cell = fmt.Sprintf("%.1f%%", 100*float64(a)/float64(x))
				}
				row = append(row, cell)
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}

	fmt.Fprintln(w, "\nWhat each strategy's stored bytes count:")
	fmt.Fprintln(w)
	for _, s := range DedupStrategies {
		fmt.Fprintf(w, "- `%s`: %s.\n", s.Name, s.Counts)
	}
	fmt.Fprintf(w, "\nnixcas-disk (the nixcas-frames store) with its write-ahead logs: %s MB. Uncounted metadata: directories and blob indexes of the castore stores (each distinct one once), or the chunk lists of the NAR-level stores (36 bytes per chunk of every NAR). ", fmtMB(r.DiskAllBytes))
	fmt.Fprintln(w, "MB/s: NAR MB per CPU second of the compressor process (CPU), or per second the strategy was busy while sharing the CPUs with all the others (busy; for the castore stores, ingesting, then packing the last hot frames, compacting and flushing after each NAR); the limit's added bytes are read off one stream, so their split between neighbouring inputs is approximate.")
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// fmtMB formats a byte count in MB: one decimal, three below 1 MB.
func fmtMB(n int64) string {
	if v := mb(n); v < 1 && v > -1 {
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.1f", mb(n))
}

// fmtMiB formats a size in MiB.
func fmtMiB(n int) string { return fmt.Sprintf("%g MiB", float64(n)/(1<<20)) }

func fmtRate(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// WriteJSON writes the result to path as
// {"inputs":[{"name","narBytes"}],"strategies":[{"name","storedBytes","addedBytes"}]}.
func (r *DedupResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
