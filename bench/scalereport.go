package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// scaleFigure is one row of the scale table and one panel of its chart.
type scaleFigure struct {
	name, unit string
	value      func(*ScaleStepResult) float64
}

var scaleFigures = []scaleFigure{
	{"narinfo requests/s, 16 connections, first window after start", "req/s", func(r *ScaleStepResult) float64 { return r.NarInfoCold16.RPS }},
	{"warm-up filling the index cache", "s", func(r *ScaleStepResult) float64 { return r.WarmupSeconds }},
	{"narinfo p50, 1 connection", "µs", func(r *ScaleStepResult) float64 { return r.NarInfo1.P50us }},
	{"narinfo p99, 1 connection", "µs", func(r *ScaleStepResult) float64 { return r.NarInfo1.P99us }},
	{"narinfo requests/s, 1 connection", "req/s", func(r *ScaleStepResult) float64 { return r.NarInfo1.RPS }},
	{"narinfo p50, 16 connections", "µs", func(r *ScaleStepResult) float64 { return r.NarInfo16.P50us }},
	{"narinfo p99, 16 connections", "µs", func(r *ScaleStepResult) float64 { return r.NarInfo16.P99us }},
	{"narinfo requests/s, 16 connections", "req/s", func(r *ScaleStepResult) float64 { return r.NarInfo16.RPS }},
	{"NAR 10 KiB, p50", "µs", func(r *ScaleStepResult) float64 { return r.NARSmallP50us }},
	{"NAR 10 KiB", "MB/s", func(r *ScaleStepResult) float64 { return r.NARSmallMBps }},
	{"NAR 5 MiB", "MB/s", func(r *ScaleStepResult) float64 { return r.NARMediumMBps }},
	{"NAR large", "MB/s", func(r *ScaleStepResult) float64 { return r.NARLargeMBps }},
	{"ingest of a new large NAR", "MB/s", func(r *ScaleStepResult) float64 { return r.IngestMBps }},
	{"chunk lookup, present", "ns", func(r *ScaleStepResult) float64 { return r.LookupHitNs }},
	{"chunk lookup, absent", "ns", func(r *ScaleStepResult) float64 { return r.LookupMissNs }},
	{"index cache hits during lookups", "%", func(r *ScaleStepResult) float64 { return r.LookupCacheHitPct }},
	{"server start", "ms", func(r *ScaleStepResult) float64 { return r.StartMs }},
	{"server RSS after the load", "MiB", func(r *ScaleStepResult) float64 { return float64(r.RSSKiB) / 1024 }},
	{"server peak RSS", "MiB", func(r *ScaleStepResult) float64 { return float64(r.PeakRSSKiB) / 1024 }},
	{"metadata on disk per chunk", "bytes", func(r *ScaleStepResult) float64 { return r.MetaBytesPerChunk }},
	{"metadata on disk per path", "bytes", func(r *ScaleStepResult) float64 { return r.MetaBytesPerPath }},
	{"store on disk", "MB", func(r *ScaleStepResult) float64 { return mb(r.DiskBytes) }},
	{"building the step", "s", func(r *ScaleStepResult) float64 { return r.BuildSeconds }},
	{"load average, start / end", "", nil},
}

// WriteMarkdown prints a row per figure and a column per store size, with
// the ratio of the last size to the first.
func (r *ScaleResult) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "| figure |")
	for _, st := range r.Steps {
		fmt.Fprintf(w, " %s paths, %s chunks |", countLabel(st.Paths), countLabel(st.Chunks))
	}
	fmt.Fprintf(w, " last / first |\n|---|")
	for range r.Steps {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintf(w, "---:|\n")
	for _, f := range scaleFigures {
		name := f.name
		if f.unit != "" {
			name += " (" + f.unit + ")"
		}
		if name == "NAR large (MB/s)" {
			name = fmt.Sprintf("NAR %d MiB (MB/s)", r.LargeMiB)
		}
		fmt.Fprintf(w, "| %s |", name)
		for i := range r.Steps {
			st := &r.Steps[i]
			if f.value == nil {
				fmt.Fprintf(w, " %.2f / %.2f |", st.LoadBefore, st.LoadAfter)
				continue
			}
			fmt.Fprintf(w, " %s |", fmtFigure(f.value(st)))
		}
		if f.value == nil || len(r.Steps) < 2 || f.value(&r.Steps[0]) == 0 {
			fmt.Fprintf(w, " |\n")
			continue
		}
		fmt.Fprintf(w, " %.2fx |\n", f.value(&r.Steps[len(r.Steps)-1])/f.value(&r.Steps[0]))
	}
}

// fmtFigure prints three significant digits, no exponent.
func fmtFigure(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// countLabel writes 10000 as 10k and 1000000 as 1M.
func countLabel(n int) string {
	switch {
	case n >= 1e6 && n%1e6 == 0:
		return fmt.Sprintf("%dM", n/1e6)
	case n >= 1e3 && n%1e3 == 0:
		return fmt.Sprintf("%dk", n/1e3)
	}
	return fmt.Sprint(n)
}

// WriteChart draws a panel per figure into path, an SVG file: the figure
// against the number of paths (log scale), each panel from 0.
func (r *ScaleResult) WriteChart(path string) error {
	if strings.ToLower(filepath.Ext(path)) != ".svg" {
		return fmt.Errorf("bench: chart %s: want a .svg file", path)
	}
	const (
		cols          = 4
		panelW        = 240
		panelH        = 170
		plotL, plotR  = 50, 15
		plotT, plotB  = 30, 35
		width         = cols * panelW
		chartFontSize = 11
	)
	var figs []scaleFigure
	for _, f := range scaleFigures {
		if f.value != nil {
			figs = append(figs, f)
		}
	}
	rows := (len(figs) + cols - 1) / cols
	height := rows*panelH + 30
	var svg svgWriter
	svg.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`+"\n", width, height, width, height, chartFontSize)
	svg.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	svg.text(width/2, 18, "middle", 14, "nixcas bench scale: each figure against the number of store paths")
	lo, hi := math.Log10(float64(r.Steps[0].Paths)), math.Log10(float64(r.Steps[len(r.Steps)-1].Paths))
	if hi == lo {
		hi = lo + 1
	}
	for k, f := range figs {
		x0, y0 := (k%cols)*panelW, 30+(k/cols)*panelH
		left, right := float64(x0+plotL), float64(x0+panelW-plotR)
		top, bottom := float64(y0+plotT), float64(y0+panelH-plotB)
		title := f.name
		if f.unit != "" {
			title += " (" + f.unit + ")"
		}
		svg.text(x0+panelW/2, y0+16, "middle", chartFontSize, title)
		var vmax float64
		for i := range r.Steps {
			vmax = max(vmax, f.value(&r.Steps[i]))
		}
		if vmax <= 0 {
			vmax = 1
		}
		ticks := linearTicks(vmax*1.1, 4)
		ymax := ticks[len(ticks)-1]
		if ymax < vmax {
			ymax = vmax * 1.1
		}
		y := func(v float64) float64 { return bottom - v/ymax*(bottom-top) }
		x := func(n int) float64 { return left + (math.Log10(float64(n))-lo)/(hi-lo)*(right-left) }
		for _, t := range ticks {
			svg.line(left, y(t), right, y(t), "#dddddd", "")
			svg.printf(`<text x="%.1f" y="%.1f" text-anchor="end" font-size="9">%s</text>`+"\n", left-3, y(t)+3, escape(trimFloat(t)))
		}
		for _, st := range r.Steps {
			svg.printf(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x(st.Paths), bottom+12, countLabel(st.Paths))
		}
		svg.line(left, bottom, right, bottom, "#000000", "")
		for i := 1; i < len(r.Steps); i++ {
			a, b := &r.Steps[i-1], &r.Steps[i]
			svg.line(x(a.Paths), y(f.value(a)), x(b.Paths), y(f.value(b)), chartColors[0], "")
		}
		for i := range r.Steps {
			st := &r.Steps[i]
			svg.printf(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(st.Paths), y(f.value(st)), chartColors[0])
		}
	}
	svg.printf("</svg>\n")
	return os.WriteFile(path, svg.Bytes(), 0o644)
}
