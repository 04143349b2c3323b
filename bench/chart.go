package main

import (
	"fmt"
	"math"
	"strings"
)

// chart draws cycles/s against workers (log scale) as an SVG line chart,
// one line per implementation.
func chart(libs []string, workers []int, results map[string]map[int]*stats) string {
	const w, h, left, right, top, bottom = 640, 400, 70, 130, 40, 50
	maxRate := 1.0
	for _, lib := range libs {
		for _, s := range results[lib] {
			maxRate = math.Max(maxRate, s.rate())
		}
	}
	maxRate = niceCeil(maxRate)
	x := func(i int) float64 {
		if len(workers) == 1 {
			return left
		}
		return left + float64(i)*float64(w-left-right)/float64(len(workers)-1)
	}
	y := func(r float64) float64 { return float64(h-bottom) - r/maxRate*float64(h-top-bottom) }
	colors := []string{"#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">TryLock+Unlock cycles/s on distinct keys, 5 local nodes</text>`+"\n", left)
	for i := 0; i <= 4; i++ {
		r := maxRate * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(r), w-right, y(r))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(r)+4, r)
	}
	for i, wk := range workers {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(i), h-bottom+18, wk)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">concurrent workers</text>`+"\n", (left+w-right)/2, h-12)
	for li, lib := range libs {
		var pts []string
		for i, wk := range workers {
			if s := results[lib][wk]; s != nil {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(s.rate())))
			}
		}
		c := colors[li%len(colors)]
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
		for _, p := range pts {
			xy := strings.Split(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], c)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", w-right+12, top+20+18*li, c, lib)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
