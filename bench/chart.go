package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteChart draws the result into path, as SVG or PNG by its extension:
// above, the bytes each strategy stores after all inputs; below, the bytes
// each input added, per strategy, on a log scale.
func (r *DedupResult) WriteChart(path string) error {
	stored, err := r.storedPlot()
	if err != nil {
		return err
	}
	added, err := r.addedPlot()
	if err != nil {
		return err
	}

	const width, height = 10 * vg.Inch, 12 * vg.Inch
	var c vg.CanvasSizer
	var write func(f *os.File) error
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		sc := vgsvg.New(width, height)
		c, write = sc, func(f *os.File) error { _, err := sc.WriteTo(f); return err }
	case ".png":
		ic := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))}
		c, write = ic, func(f *os.File) error { _, err := ic.WriteTo(f); return err }
	default:
		return fmt.Errorf("bench: chart %s: want a .svg or .png file", path)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Centimeter, PadTop: vg.Millimeter * 4, PadBottom: vg.Millimeter * 4, PadLeft: vg.Millimeter * 4, PadRight: vg.Millimeter * 4}
	plots := [][]*plot.Plot{{stored}, {added}}
	canvases := plot.Align(plots, tiles, dc)
	stored.Draw(canvases[0][0])
	added.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// storedPlot is a horizontal bar per strategy, the first at the top.
func (r *DedupResult) storedPlot() (*plot.Plot, error) {
	raw := r.RawBytes()
	n := len(r.Strategies)
	names := make([]string, n)
	vals := make(plotter.Values, n)
	labels := plotter.XYLabels{XYs: make(plotter.XYs, n), Labels: make([]string, n)}
	for i, s := range r.Strategies {
		j := n - 1 - i
		names[j] = s.Name
		vals[j] = mb(s.StoredBytes)
		labels.XYs[j] = plotter.XY{X: vals[j], Y: float64(j)}
		labels.Labels[j] = fmt.Sprintf("  %s MB (%.1f%% of raw)", fmtMB(s.StoredBytes), 100*float64(s.StoredBytes)/float64(raw))
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Stored after all %d NARs (%s MB raw)", len(r.Inputs), fmtMB(raw))
	p.X.Label.Text = "MB (10^6 bytes)"
	// One bar chart per colour: nixcas, the limit, everything else.
	groups := [3]plotter.Values{make(plotter.Values, n), make(plotter.Values, n), make(plotter.Values, n)}
	for j, name := range names {
		g := 0
		switch {
		case strings.HasPrefix(name, "nixcas"):
			g = 1
		case name == StrategyLimitZstdLong:
			g = 2
		}
		groups[g][j] = vals[j]
	}
	for g, vs := range groups {
		bars, err := plotter.NewBarChart(vs, vg.Points(14))
		if err != nil {
			return nil, err
		}
		bars.Horizontal = true
		bars.Color = plotutil.Color(g)
		bars.LineStyle.Width = 0
		p.Add(bars)
	}
	text, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range text.TextStyle {
		text.TextStyle[i].YAlign = draw.YCenter
		text.TextStyle[i].Font.Size = vg.Points(9)
	}
	p.Add(text, plotter.NewGrid())
	p.NominalY(names...)
	p.X.Min = 0
	p.X.Max = 1.35 * mb(raw) // room for the labels
	return p, nil
}

// addedPlot is a line per strategy through the bytes each input added.
func (r *DedupResult) addedPlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Added by each NAR, in order (MB, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = "MB added"
	const floor = 0.01 // log scale: zero and below are drawn here
	names := make([]string, len(r.Inputs))
	for i, in := range r.Inputs {
		names[i] = in.Name
	}
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	for i, s := range r.Strategies {
		pts := make(plotter.XYs, len(s.AddedBytes))
		for k, a := range s.AddedBytes {
			pts[k] = plotter.XY{X: float64(k), Y: max(mb(a), floor)}
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / 7)
		line.Width = vg.Points(1.5)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(s.Name, line, points)
	}
	p.Add(plotter.NewGrid())
	p.NominalX(names...)
	// Room on the right for the legend.
	p.X.Min = -0.3
	p.X.Max = float64(len(r.Inputs)-1) + 1.6
	if len(r.Inputs) > 6 {
		p.X.Tick.Label.Rotation = 0.5
		p.X.Tick.Label.XAlign = draw.XRight
	}
	return p, nil
}
