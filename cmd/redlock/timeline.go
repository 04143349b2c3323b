package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"
)

// Timeline geometry, in SVG user units.
const (
	tlWidth  = 1000.0
	tlLeft   = 90.0 // room for row labels
	tlRight  = 20.0
	tlTop    = 40.0 // room for the title and event labels
	tlRow    = 22.0
	tlBar    = 14.0
	tlBottom = 40.0 // room for the time axis
)

var tlColors = []string{"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac", "#e15759"}

func writeTimelineFile(path string, cfg demoConfig, s *demoSummary) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeTimeline(f, cfg, s); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// writeTimeline draws the run as an SVG: one row per worker with its hold
// intervals, one row per node with the spans it was down, a dashed line per
// node event across all rows, and a time axis.
func writeTimeline(out io.Writer, cfg demoConfig, s *demoSummary) error {
	w := bufio.NewWriter(out)
	span := s.elapsed
	for _, h := range s.holds {
		span = max(span, h.to)
	}
	if span <= 0 {
		span = time.Millisecond
	}
	plot := tlWidth - tlLeft - tlRight
	x := func(d time.Duration) float64 { return tlLeft + plot*float64(d)/float64(span) }
	rows := cfg.workers + cfg.nodes
	height := tlTop + float64(rows)*tlRow + 8 + tlBottom
	rowY := func(r int) float64 {
		y := tlTop + float64(r)*tlRow
		if r >= cfg.workers {
			y += 8 // gap between workers and nodes
		}
		return y
	}

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", tlWidth, height, tlWidth, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%.0f" y="14" font-size="13" font-weight="bold">redlock demo: %d grants, %d workers, %d nodes (quorum %d), ttl %v</text>`+"\n",
		tlLeft, s.grants, cfg.workers, cfg.nodes, cfg.nodes/2+1, cfg.ttl)

	for wk := 0; wk < cfg.workers; wk++ {
		y := rowY(wk)
		fmt.Fprintf(w, `<text x="4" y="%.1f">worker %d</text>`+"\n", y+tlBar-3, wk+1)
		fmt.Fprintf(w, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", tlLeft, tlLeft+plot, y+tlBar/2, y+tlBar/2)
	}
	for _, h := range s.holds {
		y := rowY(h.worker)
		fmt.Fprintf(w, `<rect x="%.2f" y="%.1f" width="%.2f" height="%.0f" fill="%s"><title>worker %d holds %.3fs - %.3fs</title></rect>`+"\n",
			x(h.from), y, max(x(h.to)-x(h.from), 0.6), tlBar, tlColors[h.worker%len(tlColors)], h.worker+1, h.from.Seconds(), h.to.Seconds())
	}

	// Node rows: up is a thin green line, down a red bar.
	downSince := make(map[int]time.Duration)
	for n := 0; n < cfg.nodes; n++ {
		y := rowY(cfg.workers + n)
		fmt.Fprintf(w, `<text x="4" y="%.1f">node %d</text>`+"\n", y+tlBar-3, n+1)
		fmt.Fprintf(w, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#59a14f" stroke-width="2"/>`+"\n", tlLeft, tlLeft+plot, y+tlBar/2, y+tlBar/2)
	}
	downBar := func(n int, from, to time.Duration) {
		y := rowY(cfg.workers + n)
		fmt.Fprintf(w, `<rect x="%.2f" y="%.1f" width="%.2f" height="%.0f" fill="#e15759"><title>node %d down %.3fs - %.3fs (data lost)</title></rect>`+"\n",
			x(from), y, max(x(to)-x(from), 0.6), tlBar, n+1, from.Seconds(), to.Seconds())
	}
	bottom := rowY(rows-1) + tlRow
	for _, e := range s.nodeEvents {
		label := fmt.Sprintf("n%d restart", e.node+1)
		if e.crashed {
			label = fmt.Sprintf("n%d crash", e.node+1)
			downSince[e.node] = e.at
		} else if from, ok := downSince[e.node]; ok {
			downBar(e.node, from, e.at)
			delete(downSince, e.node)
		}
		fmt.Fprintf(w, `<line x1="%.2f" x2="%.2f" y1="%.1f" y2="%.1f" stroke="#e15759" stroke-dasharray="4 3"/>`+"\n", x(e.at), x(e.at), tlTop-12, bottom)
		fmt.Fprintf(w, `<text x="%.2f" y="%.1f" fill="#e15759" text-anchor="middle">%s</text>`+"\n", x(e.at), tlTop-15, label)
	}
	for n, from := range downSince { // still down at the end
		downBar(n, from, span)
	}

	// Time axis with about ten ticks at a round step.
	fmt.Fprintf(w, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", tlLeft, tlLeft+plot, bottom, bottom)
	step := tickStep(span)
	for t := time.Duration(0); t <= span; t += step {
		fmt.Fprintf(w, `<line x1="%.2f" x2="%.2f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", x(t), x(t), bottom, bottom+4)
		fmt.Fprintf(w, `<text x="%.2f" y="%.1f" text-anchor="middle">%gs</text>`+"\n", x(t), bottom+16, t.Seconds())
	}
	fmt.Fprintln(w, "</svg>")
	return w.Flush()
}

// tickStep returns a 1-2-5 step giving at most about ten ticks over span.
func tickStep(span time.Duration) time.Duration {
	step := time.Millisecond
	for {
		for _, m := range []time.Duration{1, 2, 5} {
			if span/(step*m) <= 10 {
				return step * m
			}
		}
		step *= 10
	}
}
