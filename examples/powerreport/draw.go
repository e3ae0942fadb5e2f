package main

import (
	"context"
	"image/color"
	"io"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// bands of the power picture, bottom up.
var bands = []struct {
	name  string
	color color.RGBA
	kinds []workload.Kind
}{
	{"rental", color.RGBA{R: 0x2b, G: 0x6c, B: 0xb0, A: 0xff}, []workload.Kind{workload.KindTraining, workload.KindInference, workload.KindBatch}},
	{"mining", color.RGBA{R: 0xe0, G: 0x8e, B: 0x1b, A: 0xff}, []workload.Kind{workload.KindMining}},
	{"idle", color.RGBA{R: 0xa0, G: 0xa0, B: 0xa0, A: 0xff}, []workload.Kind{accounting.KindIdle, accounting.KindGap}},
}

// drawDay draws the day as SVG: the GPUs' power stacked by kind, minute
// by minute, the tariff under it on the same hours, and the margin per
// GPU-hour of each kind.
func drawDay(ctx context.Context, w io.Writer, l accounting.Ledger, q accounting.Query, t accounting.Tariff) error {
	const minutes = 24 * 60
	var joules [3][minutes]float64
	for r, err := range l.Query(ctx, q) {
		if err != nil {
			return err
		}
		m := int(r.Start.Sub(day) / time.Minute)
		if m < 0 || m >= minutes {
			continue
		}
		for b, band := range bands {
			for _, k := range band.kinds {
				if r.Kind == k {
					joules[b][m] += float64(r.EnergyMJ) / 1000
				}
			}
		}
	}

	power := plot.New()
	power.Title.Text = "GPU power by kind, " + day.Format("Monday 2 January 2006")
	power.Y.Label.Text = "W"
	power.X.Label.Text = "hour"
	power.X.Min, power.X.Max = 0, 24
	power.Legend.Top, power.Legend.Left = true, true
	// Stacked: each band is drawn from the top of the ones below it, the
	// top one first so the lower ones paint over it.
	var stack [minutes]float64
	areas := make([]*plotter.Line, len(bands))
	for b := range bands {
		xys := make(plotter.XYs, 0, minutes+2)
		xys = append(xys, plotter.XY{X: 0, Y: 0})
		for m := range minutes {
			stack[m] += joules[b][m] / 60
			xys = append(xys, plotter.XY{X: float64(m) / 60, Y: stack[m]})
		}
		xys = append(xys, plotter.XY{X: 24, Y: 0})
		line, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		line.FillColor = bands[b].color
		line.LineStyle.Width = 0
		areas[b] = line
	}
	for b := len(areas) - 1; b >= 0; b-- {
		power.Add(areas[b])
	}
	for b := range bands {
		power.Legend.Add(bands[b].name, areas[b])
	}
	top := 0.0
	for _, v := range stack {
		top = max(top, v)
	}
	power.Y.Min, power.Y.Max = 0, top*1.3 // room for the legend

	price := plot.New()
	price.Title.Text = "tariff"
	price.Y.Label.Text = "per kWh"
	price.X.Label.Text = "hour"
	price.X.Min, price.X.Max = 0, 24
	var steps plotter.XYs
	for m := 0; m <= minutes; m++ {
		p, _, err := t.PriceAt(day.Add(time.Duration(min(m, minutes-1)) * time.Minute))
		if err != nil {
			return err
		}
		steps = append(steps, plotter.XY{X: float64(m) / 60, Y: p})
	}
	line, err := plotter.NewLine(steps)
	if err != nil {
		return err
	}
	line.LineStyle.Width = vg.Points(2)
	line.LineStyle.Color = color.RGBA{R: 0xb0, G: 0x20, B: 0x20, A: 0xff}
	price.Add(line)
	price.Y.Min = 0

	rows, err := accounting.Summarize(l.Query(ctx, q), accounting.ByKind)
	if err != nil {
		return err
	}
	var names []string
	var values plotter.Values
	for _, r := range rows {
		if r.GPUHours > 0 {
			names = append(names, r.Key)
			values = append(values, r.MarginPerGPUHour())
		}
	}
	margin := plot.New()
	margin.Title.Text = "margin per GPU-hour"
	margin.Y.Label.Text = "per GPU-hour"
	bars, err := plotter.NewBarChart(values, vg.Points(40))
	if err != nil {
		return err
	}
	bars.Color = color.RGBA{R: 0x2b, G: 0x6c, B: 0xb0, A: 0xff}
	margin.Add(bars, plotter.NewGrid())
	margin.NominalX(names...)
	margin.X.Min, margin.X.Max = -0.75, float64(len(names))-0.25

	c := vgsvg.New(9*vg.Inch, 10*vg.Inch)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(6), PadY: vg.Points(12)}
	plots := [][]*plot.Plot{{power}, {price}, {margin}}
	canvases := plot.Align(plots, tiles, draw.New(c))
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	_, err = c.WriteTo(w)
	return err
}
