package main

import (
	"fmt"
	"image/color"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var implColor = map[string]color.Color{
	"dlock": color.RGBA{R: 0x1f, G: 0x5f, B: 0xbf, A: 0xff},
	"raw":   color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff},
	"peer":  color.RGBA{R: 0xe0, G: 0x7b, B: 0x10, A: 0xff},
}

var dbDashes = map[string][]vg.Length{
	"mariadb":  nil,
	"mysql":    {vg.Points(1), vg.Points(2)},
	"postgres": {vg.Points(5), vg.Points(3)},
}

func implName(db, impl string) string {
	switch impl {
	case "dlock":
		return "dlock"
	case "raw":
		return "raw SQL"
	}
	return peerName(db)
}

// addLine adds one series; points without a value are left out. It
// returns the largest y.
func addLine(p *plot.Plot, db, impl string, xs []float64, y func(x float64) (float64, bool)) (float64, error) {
	var pts plotter.XYs
	for _, x := range xs {
		if v, ok := y(x); ok {
			pts = append(pts, plotter.XY{X: x, Y: v})
		}
	}
	if len(pts) == 0 {
		return 0, nil
	}
	top := 0.0
	for _, pt := range pts {
		top = max(top, pt.Y)
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return 0, err
	}
	l.Color = implColor[impl]
	l.Width = vg.Points(1.5)
	l.Dashes = dbDashes[db]
	s, err := plotter.NewScatter(pts)
	if err != nil {
		return 0, err
	}
	s.Color = implColor[impl]
	s.Radius = vg.Points(2)
	p.Add(l, s)
	p.Legend.Add(dbTitle(db)+" "+implName(db, impl), l)
	return top, nil
}

func ticks(xs []float64) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, x := range xs {
		t = append(t, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
	}
	return t
}

// plotGrowth draws the two growth curves side by side into a PNG.
func plotGrowth(r *results, path string) error {
	dbs := dbsOf(r)

	held := plot.New()
	held.Title.Text = "Locks held at once on one session"
	held.X.Label.Text = "locks held (log scale)"
	held.Y.Label.Text = "µs per lock (acquire + release)"
	held.X.Scale = plot.LogScale{}
	keyXs := []float64{1, 10, 100, 1000, 10000}
	held.X.Tick.Marker = ticks(keyXs)
	held.X.Min, held.X.Max = 1, 10000
	top := 0.0
	for _, db := range dbs {
		for _, impl := range []string{"dlock", "raw"} {
			t, err := addLine(held, db, impl, keyXs, func(x float64) (float64, bool) {
				v, ok := r.get(fmt.Sprintf("HeldKeys/db=%s/keys=%.0f/impl=%s", db, x, impl), "ns/lock")
				return v / 1e3, ok
			})
			if err != nil {
				return err
			}
			top = max(top, t)
		}
	}
	held.Y.Min, held.Y.Max = 0, max(top, 1)*1.45 // room for the legend
	held.Legend.Top = true

	sess := plot.New()
	sess.Title.Text = "Concurrent sessions, one key each"
	sess.X.Label.Text = "sessions (log scale)"
	sess.Y.Label.Text = "cycles per second, all sessions"
	sess.X.Scale = plot.LogScale{}
	var sessXs []float64
	for _, n := range sessionCounts {
		sessXs = append(sessXs, float64(n))
	}
	sess.X.Tick.Marker = ticks(sessXs)
	sess.X.Min, sess.X.Max = 1, 64
	top = 0
	for _, db := range dbs {
		for _, impl := range []string{"dlock", "raw", "peer"} {
			t, err := addLine(sess, db, impl, sessXs, func(x float64) (float64, bool) {
				return r.get(fmt.Sprintf("Sessions/db=%s/sessions=%.0f/impl=%s", db, x, impl), "cycles/s")
			})
			if err != nil {
				return err
			}
			top = max(top, t)
		}
	}
	sess.Y.Min, sess.Y.Max = 0, max(top, 1)*1.6 // room for the legend
	sess.Legend.Top = true
	sess.Legend.Left = true
	for _, p := range []*plot.Plot{held, sess} {
		p.Legend.TextStyle.Font.Size = vg.Points(9)
		p.Legend.Padding = vg.Points(1)
	}

	img := vgimg.NewWith(vgimg.UseWH(vg.Points(760), vg.Points(330)), vgimg.UseDPI(96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadTop: vg.Points(6),
		PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	plots := [][]*plot.Plot{{held, sess}}
	canvases := plot.Align(plots, tiles, dc)
	held.Draw(canvases[0][0])
	sess.Draw(canvases[0][1])

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
