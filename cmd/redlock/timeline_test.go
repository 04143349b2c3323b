package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTimelineSVG(t *testing.T) {
	cfg := demoConfig{nodes: 3, workers: 2, ttl: time.Second}
	s := &demoSummary{
		grants:  3,
		elapsed: 4 * time.Second,
		holds: []hold{
			{worker: 0, from: 100 * time.Millisecond, to: 200 * time.Millisecond},
			{worker: 1, from: 2 * time.Second, to: 3 * time.Second},
			{worker: 0, from: 3 * time.Second, to: 3*time.Second + time.Microsecond}, // still drawn
		},
		nodeEvents: []nodeEvent{
			{at: time.Second, node: 1, crashed: true},
			{at: 2500 * time.Millisecond, node: 1},
			{at: 3500 * time.Millisecond, node: 2, crashed: true}, // down at the end
		},
	}
	var b bytes.Buffer
	require.NoError(t, writeTimeline(&b, cfg, s))

	var rects, titles []string
	d := xml.NewDecoder(&b)
	inTitle := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "well-formed XML")
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "rect" {
				for _, a := range e.Attr {
					if a.Name.Local == "x" {
						rects = append(rects, a.Value)
					}
				}
			}
			inTitle = e.Name.Local == "title"
		case xml.CharData:
			if inTitle {
				titles = append(titles, string(e))
			}
		case xml.EndElement:
			inTitle = false
		}
	}
	// 3 holds + 2 down spans (one closed by the end of the run).
	assert.Len(t, rects, 5)
	joined := strings.Join(titles, "\n")
	assert.Contains(t, joined, "worker 2 holds 2.000s - 3.000s")
	assert.Contains(t, joined, "node 2 down 1.000s - 2.500s")
	assert.Contains(t, joined, "node 3 down 3.500s - 4.000s")
	// x of the hold at 2s on a 4s axis is half way across the plot.
	assert.Contains(t, rects, "535.00") // 90 + 890/2
	assert.Equal(t, 500*time.Millisecond, tickStep(4*time.Second))
	assert.Equal(t, time.Second, tickStep(8*time.Second))
}
