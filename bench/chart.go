package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// The chart is SVG written by hand: two panels of bars and lines need no
// plotting library, and keeping one out keeps the nixcas binary lean.

// Chart geometry, in SVG user units (pixels).
const (
	chartWidth  = 1000
	chartMargin = 40
	// barsLeft leaves room for the strategy names left of the bars.
	barsLeft   = 200
	barRow     = 26
	barHeight  = 16
	panelTitle = 40
	axisBelow  = 46
	linesTop   = 40
	linesPlot  = 420
	// legendWidth is the room right of the line plot for its legend.
	legendWidth = 190
)

// chartColors are the series colours, in order.
var chartColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// chartDashes are the dash patterns of the lines, one per round of colours.
var chartDashes = []string{"", "6,3", "2,3", "8,3,2,3"}

// WriteChart draws the result into path, an SVG file: above, the bytes
// each strategy stores after all inputs; below, the bytes each input
// added, per strategy, on a log scale.
func (r *DedupResult) WriteChart(path string) error {
	if strings.ToLower(filepath.Ext(path)) != ".svg" {
		return fmt.Errorf("bench: chart %s: want a .svg file", path)
	}
	var svg svgWriter
	barsHeight := panelTitle + len(r.Strategies)*barRow + axisBelow
	height := chartMargin + barsHeight + chartMargin + linesTop + linesPlot + axisBelow + 40 + chartMargin
	svg.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartWidth, height, chartWidth, height)
	svg.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	r.drawStored(&svg, chartMargin)
	r.drawAdded(&svg, chartMargin+barsHeight+chartMargin)
	svg.printf("</svg>\n")
	return os.WriteFile(path, svg.Bytes(), 0o644)
}

// drawStored draws a horizontal bar per strategy, the first at the top,
// with the panel's top at y.
func (r *DedupResult) drawStored(svg *svgWriter, y int) {
	raw := r.RawBytes()
	svg.text(chartWidth/2, y+16, "middle", 15, fmt.Sprintf("Stored after all %d NARs (%s MB raw)", len(r.Inputs), fmtMB(raw)))
	top := y + panelTitle
	left, right := barsLeft, chartWidth-chartMargin
	xMax := 1.35 * mb(raw) // room for the labels
	if xMax <= 0 {
		xMax = 1
	}
	x := func(v float64) float64 { return float64(left) + v/xMax*float64(right-left) }
	bottom := top + len(r.Strategies)*barRow
	for _, tick := range linearTicks(xMax, 8) {
		svg.line(x(tick), float64(top), x(tick), float64(bottom), "#dddddd", "")
		svg.text(int(x(tick)), bottom+16, "middle", 11, trimFloat(tick))
	}
	svg.text((left+right)/2, bottom+36, "middle", 12, "MB (10^6 bytes)")
	for i, s := range r.Strategies {
		color := chartColors[0]
		switch {
		case s.Name == StrategyNixcasFrames || s.Name == StrategyNixcasCompact:
			color = chartColors[3]
		case strings.HasPrefix(s.Name, "nixcas"):
			color = chartColors[1]
		case s.Name == StrategyLimitZstdLong:
			color = chartColors[2]
		}
		rowY := top + i*barRow + (barRow-barHeight)/2
		w := x(mb(s.StoredBytes)) - float64(left)
		svg.printf(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, rowY, w, barHeight, color)
		svg.text(left-8, rowY+barHeight-4, "end", 12, s.Name)
		pct := 0.0
		if raw > 0 {
			pct = 100 * float64(s.StoredBytes) / float64(raw)
		}
		svg.text(int(float64(left)+w)+6, rowY+barHeight-4, "start", 11, fmt.Sprintf("%s MB (%.1f%% of raw)", fmtMB(s.StoredBytes), pct))
	}
	svg.line(float64(left), float64(top), float64(left), float64(bottom), "black", "")
}

// drawAdded draws a line per strategy through the bytes each input added,
// on a log scale, with the panel's top at y.
func (r *DedupResult) drawAdded(svg *svgWriter, y int) {
	svg.text(chartWidth/2, y+16, "middle", 15, "Added by each NAR, in order (MB, log scale)")
	const floor = 0.01 // log scale: zero and below are drawn here
	top, bottom := y+linesTop, y+linesTop+linesPlot
	left, right := chartMargin+50, chartWidth-chartMargin-legendWidth
	hi := floor * 10
	for _, s := range r.Strategies {
		for _, a := range s.AddedBytes {
			hi = max(hi, mb(a))
		}
	}
	lo, top10 := math.Log10(floor), math.Ceil(math.Log10(hi))
	yOf := func(v float64) float64 {
		return float64(bottom) - (math.Log10(max(v, floor))-lo)/(top10-lo)*float64(bottom-top)
	}
	n := len(r.Inputs)
	xOf := func(k int) float64 {
		if n <= 1 {
			return float64(left+right) / 2
		}
		return float64(left) + 20 + float64(k)*float64(right-left-40)/float64(n-1)
	}
	for e := lo; e <= top10; e++ {
		v := math.Pow(10, e)
		svg.line(float64(left), yOf(v), float64(right), yOf(v), "#dddddd", "")
		svg.text(left-6, int(yOf(v))+4, "end", 11, trimFloat(v))
	}
	svg.printf(`<text x="%d" y="%d" text-anchor="middle" font-size="12" transform="rotate(-90 %d %d)">MB added</text>`+"\n", left-44, (top+bottom)/2, left-44, (top+bottom)/2)
	for k, in := range r.Inputs {
		if n > 6 {
			svg.printf(`<text x="%.1f" y="%d" text-anchor="end" font-size="11" transform="rotate(-30 %.1f %d)">%s</text>`+"\n", xOf(k), bottom+16, xOf(k), bottom+16, escape(in.Name))
		} else {
			svg.text(int(xOf(k)), bottom+16, "middle", 11, in.Name)
		}
	}
	svg.line(float64(left), float64(top), float64(left), float64(bottom), "black", "")
	svg.line(float64(left), float64(bottom), float64(right), float64(bottom), "black", "")
	for i, s := range r.Strategies {
		color := chartColors[i%len(chartColors)]
		dash := chartDashes[(i/len(chartColors))%len(chartDashes)]
		var pts strings.Builder
		for k, a := range s.AddedBytes {
			fmt.Fprintf(&pts, "%.1f,%.1f ", xOf(k), yOf(mb(a)))
		}
		svg.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`+"\n", strings.TrimSpace(pts.String()), color, dashAttr(dash))
		for k, a := range s.AddedBytes {
			svg.printf(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", xOf(k), yOf(mb(a)), color)
		}
		ly := top + 10 + i*18
		svg.line(float64(right+16), float64(ly), float64(right+46), float64(ly), color, dash)
		svg.printf(`<circle cx="%d" cy="%d" r="3" fill="%s"/>`+"\n", right+31, ly, color)
		svg.text(right+52, ly+4, "start", 11, s.Name)
	}
}

// linearTicks returns about n round tick values from 0 to at most hi.
func linearTicks(hi float64, n int) []float64 {
	raw := hi / float64(n)
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw {
			step *= m
			break
		}
	}
	var ticks []float64
	for v := 0.0; v <= hi*(1+1e-9); v += step {
		ticks = append(ticks, v)
	}
	return ticks
}

// trimFloat formats a tick value without trailing zeros.
func trimFloat(v float64) string { return fmt.Sprintf("%g", math.Round(v*1000)/1000) }

func dashAttr(dash string) string {
	if dash == "" {
		return ""
	}
	return fmt.Sprintf(` stroke-dasharray="%s"`, dash)
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// svgWriter collects SVG elements.
type svgWriter struct{ bytes.Buffer }

func (w *svgWriter) printf(format string, args ...any) { fmt.Fprintf(w, format, args...) }

func (w *svgWriter) text(x, y int, anchor string, size int, s string) {
	w.printf(`<text x="%d" y="%d" text-anchor="%s" font-size="%d">%s</text>`+"\n", x, y, anchor, size, escape(s))
}

func (w *svgWriter) line(x1, y1, x2, y2 float64, color, dash string) {
	w.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"%s/>`+"\n", x1, y1, x2, y2, color, dashAttr(dash))
}
