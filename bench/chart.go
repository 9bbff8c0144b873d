package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The chart: the timelines of a run as one PNG of three stacked panels
// sharing the time axis: ack latency (p50, p99), end-to-end latency (p50,
// p99) and throughput (202s/s, callbacks/s). Latencies are on a log scale.
// A dotted vertical line marks the end of each workload's load; after it,
// chargeauth drains its callbacks.

const (
	chartDPI     = 96
	chartWidthPx = 1200
	// chartPanelPx is one panel's height.
	chartPanelPx = 400
)

// chartWorkload is one workload's timeline on the chart.
type chartWorkload struct {
	Name     string
	Timeline []TimelinePoint
	// LoadEndS is when the load ended, in seconds since it started.
	LoadEndS float64
	Color    color.Color
}

var (
	ceilingColor    = color.RGBA{R: 31, G: 119, B: 180, A: 255} // blue
	durableColor    = color.RGBA{R: 255, G: 127, B: 14, A: 255} // orange
	chargeauthColor = color.RGBA{R: 214, G: 39, B: 40, A: 255}  // red
	callbacksColor  = color.RGBA{R: 44, G: 160, B: 44, A: 255}  // green
)

// chartPath is the chart's path for a JSON report: the same with .png.
func chartPath(jsonPath string) string {
	return strings.TrimSuffix(jsonPath, filepath.Ext(jsonPath)) + ".png"
}

// chartWorkloads returns the run's workloads for the chart.
func (s *Summary) chartWorkloads() []chartWorkload {
	return []chartWorkload{
		{Name: "ceiling", Timeline: s.Ceiling.Timeline, LoadEndS: s.Ceiling.ElapsedSeconds, Color: ceilingColor},
		{Name: "durable ceiling", Timeline: s.Durable.Timeline, LoadEndS: s.Durable.ElapsedSeconds, Color: durableColor},
		{Name: "chargeauth", Timeline: s.Chargeauth.Timeline, LoadEndS: s.Chargeauth.ElapsedSeconds, Color: chargeauthColor},
	}
}

// chartTitle describes the run.
func (s *Summary) chartTitle() string {
	limit := "duration " + s.Load.Duration
	if s.Load.Requests > 0 {
		limit += fmt.Sprintf(", at most %d requests", s.Load.Requests)
	}
	rate := ""
	if s.Load.Rate > 0 {
		rate = fmt.Sprintf(" at %.0f/s", s.Load.Rate)
	}
	return fmt.Sprintf("chargeauth bench %s: ceiling (bare fasthttp), durable ceiling (+ pebble.Sync per request) and chargeauth, %d workers, %s loop%s, %s\n%s, %d CPUs, GOMAXPROCS %d; each workload's time counts from its own load start",
		s.StartedAt.Format("2006-01-02 15:04Z"), s.Load.Concurrency, s.Load.Loop, rate, limit, s.GoVersion, s.NumCPU, s.GOMAXPROCS)
}

// chartTitle describes the burst run.
func (r *BurstReport) chartTitle() string {
	return fmt.Sprintf("chargeauth burst %s: %d requests, %d workers closed loop; authz concurrency %d, max inflight %d, fake authz sleeps %s\n%s, %d CPUs, GOMAXPROCS %d",
		r.StartedAt.Format("2006-01-02 15:04Z"), r.Config.Requests, r.Config.Concurrency, r.Config.AuthzConcurrency,
		r.Config.MaxInflight, r.Config.FakeDelay, r.GoVersion, r.NumCPU, r.GOMAXPROCS)
}

// writeChart draws the workloads' timelines and writes them to path as a
// PNG, making its directory.
func writeChart(path, title string, ws []chartWorkload) error {
	ack, e2e, tput := plot.New(), plot.New(), plot.New()
	ack.Title.Text = title + "\n\nack latency: request sent (open loop: due) -> 202 read, of the 202s read in each second"
	e2e.Title.Text = "end-to-end latency: 202 read -> callback received, of the callbacks received in each second"
	tput.Title.Text = "throughput: 202s read and callbacks received per second"
	ack.Y.Label.Text = "ack ms (log)"
	e2e.Y.Label.Text = "e2e ms (log)"
	tput.Y.Label.Text = "per second"
	tput.X.Label.Text = "seconds since the load started (dotted line: the load ends; callbacks after it are the drain)"

	var xMax float64
	anyCB := false
	for _, w := range ws {
		xMax = max(xMax, w.LoadEndS)
		if n := len(w.Timeline); n > 0 {
			xMax = max(xMax, float64(w.Timeline[n-1].T))
		}
		withCB := len(w.Timeline) > 0 && w.Timeline[0].CallbackPoint != nil
		anyCB = anyCB || withCB
		if err := addLatency(ack, w, func(p TimelinePoint) (int64, float64, float64) {
			return p.Acked, p.AckP50, p.AckP99
		}); err != nil {
			return err
		}
		if withCB {
			if err := addLatency(e2e, w, func(p TimelinePoint) (int64, float64, float64) {
				return p.E2ECount, p.E2EP50, p.E2EP99
			}); err != nil {
				return err
			}
		}
		if err := addRate(tput, w.Name+" 202s/s", w.Color, nil, w.Timeline, func(p TimelinePoint) int64 { return p.Acked }); err != nil {
			return err
		}
		if withCB {
			if err := addRate(tput, w.Name+" callbacks/s", callbacksColor, []vg.Length{vg.Points(6), vg.Points(3)}, w.Timeline,
				func(p TimelinePoint) int64 { return p.Callbacks }); err != nil {
				return err
			}
		}
	}

	plots := []*plot.Plot{ack, e2e, tput}
	for i, p := range plots {
		p.X.Min, p.X.Max = 0, max(math.Ceil(xMax), 1)
		p.X.Tick.Marker = plot.TickerFunc(secondTicks)
		p.Title.TextStyle.Font.Size = vg.Points(10)
		p.Legend.Top = true
		p.Legend.TextStyle.Font.Size = vg.Points(9)
		p.Add(plotter.NewGrid())
		for _, w := range ws {
			p.Add(loadEnd{x: w.LoadEndS, color: w.Color})
		}
		if i < 2 {
			logY(p)
		} else {
			p.Y.Min = 0
			p.Y.Max = max(p.Y.Max, 1) * 1.3 // room for the legend
			p.Y.Tick.Marker = plot.TickerFunc(intTicks)
		}
	}
	if !anyCB {
		e2e.Title.Text += " (no workload with callbacks)"
	}

	const w = vg.Length(chartWidthPx) * vg.Inch / chartDPI
	h := vg.Length(chartPanelPx*len(plots)) * vg.Inch / chartDPI
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(chartDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Points(12),
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// addLatency adds w's p50 (solid) and p99 (dashed) to p, skipping the
// seconds with no latency (a log scale has no 0).
func addLatency(p *plot.Plot, w chartWorkload, f func(TimelinePoint) (n int64, p50, p99 float64)) error {
	var p50, p99 plotter.XYs
	for _, pt := range w.Timeline {
		n, a, b := f(pt)
		if n == 0 || a <= 0 || b <= 0 {
			continue
		}
		x := float64(pt.T) - 0.5 // the middle of the second
		p50 = append(p50, plotter.XY{X: x, Y: a})
		p99 = append(p99, plotter.XY{X: x, Y: b})
	}
	if len(p50) == 0 {
		return nil
	}
	if err := addSeries(p, w.Name+" p50", w.Color, nil, p50); err != nil {
		return err
	}
	return addSeries(p, w.Name+" p99", w.Color, []vg.Length{vg.Points(6), vg.Points(3)}, p99)
}

// addRate adds a count per second to p, every second included.
func addRate(p *plot.Plot, name string, c color.Color, dashes []vg.Length, tl []TimelinePoint, f func(TimelinePoint) int64) error {
	if len(tl) == 0 {
		return nil
	}
	xys := make(plotter.XYs, len(tl))
	for i, pt := range tl {
		xys[i] = plotter.XY{X: float64(pt.T) - 0.5, Y: float64(f(pt))}
	}
	return addSeries(p, name, c, dashes, xys)
}

// addSeries adds a line with a small dot at each point (so that a run of
// one second still shows) and its legend entry.
func addSeries(p *plot.Plot, name string, c color.Color, dashes []vg.Length, xys plotter.XYs) error {
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("chart: %s: %w", name, err)
	}
	l.LineStyle = draw.LineStyle{Color: c, Width: vg.Points(1.5), Dashes: dashes}
	s.GlyphStyle = draw.GlyphStyle{Color: c, Radius: vg.Points(1.5), Shape: draw.CircleGlyph{}}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// logY puts p's Y axis on a log scale with readable ticks, and leaves room
// above the data for the legend. A plot without data gets [0.1, 1].
func logY(p *plot.Plot) {
	lo, hi := p.Y.Min, p.Y.Max
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) || lo <= 0 || hi < lo {
		lo, hi = 0.1, 1
	}
	if hi < lo*2 {
		lo, hi = lo/1.5, hi*1.5
	}
	decades := math.Log10(hi / lo)
	p.Y.Min = lo / math.Pow(10, 0.05*decades)
	p.Y.Max = hi * math.Pow(10, 0.45*decades) // the legend goes above the data
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.TickerFunc(logTicks)
}

// logTicks labels 1, 2 and 5 times the powers of ten in [lo, hi] (only the
// powers of ten when the range spans more than four decades), with minor
// ticks at the other multiples.
func logTicks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	few := math.Log10(hi/lo) > 4
	for e := int(math.Floor(math.Log10(lo))); math.Pow10(e) <= hi; e++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow10(e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || !few && (m == 2 || m == 5) {
				t.Label = strconv.FormatFloat(v, 'f', max(-e, 0), 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// secondTicks labels the time axis every 1, 2, 5, 10, 15, 30 or 60·k
// seconds, so that about 10 to 20 labels show, with a minor tick every
// second when there are few.
func secondTicks(lo, hi float64) []plot.Tick {
	step := 1.0
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600} {
		if step = s; (hi-lo)/s <= 20 {
			break
		}
	}
	if (hi-lo)/step > 20 {
		step = math.Ceil((hi-lo)/20/3600) * 3600
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo); v <= hi; v++ {
		switch {
		case math.Mod(v, step) == 0:
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
		case hi-lo <= 120:
			ticks = append(ticks, plot.Tick{Value: v})
		}
		if hi-lo > 120 { // no minor ticks: jump to the next label
			v += step - 1 - math.Mod(v, step)
		}
	}
	return ticks
}

// intTicks are plot's default ticks, labelled without decimals when they
// are whole numbers (counts per second).
func intTicks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" && t.Value == math.Trunc(t.Value) {
			ticks[i].Label = strconv.FormatFloat(t.Value, 'f', 0, 64)
		}
	}
	return ticks
}

// loadEnd is a dotted vertical line where a workload's load ended.
type loadEnd struct {
	x     float64
	color color.Color
}

func (l loadEnd) Plot(c draw.Canvas, p *plot.Plot) {
	if l.x <= 0 {
		return
	}
	tx, _ := p.Transforms(&c)
	x := tx(l.x)
	c.StrokeLine2(draw.LineStyle{Color: l.color, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(1), vg.Points(3)}},
		x, c.Min.Y, x, c.Max.Y)
}
