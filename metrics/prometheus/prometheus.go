// Package prometheus exports the events of a redlock.Client as Prometheus
// metrics. It is a module of its own, so that client_golang stays out of the
// library's dependencies.
//
// Create one Metrics, register it, and pass its Observer to the Clients:
//
//	m := prometheus.New()
//	registry.MustRegister(m)
//	client, err := redlock.Dial(urls, redlock.WithObserver(m.Observer()))
//
// One Metrics may serve several Clients; their series add up (the node
// label tells the nodes apart). The metrics, all prefixed redlock_:
//
//	acquisitions_total{outcome}               counter: attempts by outcome
//	                                          (granted, contended, unreachable, cancelled, error)
//	acquire_duration_seconds{outcome}         histogram: attempt latency, send to decision
//	locks_held                                gauge: locks granted and not yet ended
//	extensions_total{kind, outcome}           counter: kind extend (Extend) or renewal (auto-extension);
//	                                          outcome ok, lost, unreachable, cancelled, error
//	locks_lost_total                          counter: locks given up by auto-extension
//	unlocks_total{outcome}                    counter: Unlock calls by outcome
//	lock_held_seconds                         histogram: time from grant to the lock's end
//	node_requests_total{node, op, vote}       counter: node answers (op acquire, extend, renewal,
//	                                          unlock; vote yes, no, failed)
//	node_errors_total{node, op}               counter: failed node answers
//	node_request_duration_seconds{node, op}   histogram: node round trips
//	node_events_total{node, kind}             counter: restarts (restarted) and evicting
//	                                          policies (eviction_risk) seen
//
// Node answers not awaited by a decided operation are not counted. Node
// labels are host:port (or pool[i] for redlock.New), never credentials; their
// cardinality is the number of nodes.
package prometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redlockgo/redlock"
)

// Namespace prefixes every metric name.
const Namespace = "redlock"

// Metrics is a prometheus.Collector of a redlock Client's events. It is safe
// for concurrent use. Its zero value is not usable: use New.
type Metrics struct {
	acquisitions *prometheus.CounterVec
	acquireTime  *prometheus.HistogramVec
	held         prometheus.Gauge
	extensions   *prometheus.CounterVec
	lost         prometheus.Counter
	unlocks      *prometheus.CounterVec
	heldTime     prometheus.Histogram
	nodeRequests *prometheus.CounterVec
	nodeErrors   *prometheus.CounterVec
	nodeTime     *prometheus.HistogramVec
	nodeEvents   *prometheus.CounterVec
}

// latencyBuckets cover a loopback round trip (100 µs) to a slow per-node
// timeout (1 s and more).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// New returns unregistered metrics; register them with a
// prometheus.Registerer (they are a prometheus.Collector).
func New() *Metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: Namespace, Name: name, Help: help}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}
	}
	return &Metrics{
		acquisitions: prometheus.NewCounterVec(prometheus.CounterOpts(opts("acquisitions_total",
			"Acquisition attempts (TryLock, each attempt of Lock and Do) by outcome.")), []string{"outcome"}),
		acquireTime: prometheus.NewHistogramVec(hist("acquire_duration_seconds",
			"Time of an acquisition attempt from sending to the decision, by outcome.", latencyBuckets), []string{"outcome"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts(opts("locks_held",
			"Locks granted and not yet ended (Unlock, loss, expiry seen by Done, Client.Close)."))),
		extensions: prometheus.NewCounterVec(prometheus.CounterOpts(opts("extensions_total",
			"Extensions by kind (extend: Lock.Extend; renewal: auto-extension) and outcome.")), []string{"kind", "outcome"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts(opts("locks_lost_total",
			"Locks given up by auto-extension: a renewal found them gone, or the loss deadline passed."))),
		unlocks: prometheus.NewCounterVec(prometheus.CounterOpts(opts("unlocks_total",
			"Unlock calls by outcome.")), []string{"outcome"}),
		heldTime: prometheus.NewHistogram(hist("lock_held_seconds",
			"Time from a lock's grant to its end.", prometheus.ExponentialBuckets(.001, 4, 12))),
		nodeRequests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("node_requests_total",
			"Node answers awaited by lock operations, by node, operation and vote.")), []string{"node", "op", "vote"}),
		nodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("node_errors_total",
			"Failed node answers (timeouts, connection and server errors), by node and operation.")), []string{"node", "op"}),
		nodeTime: prometheus.NewHistogramVec(hist("node_request_duration_seconds",
			"Round trip of one node in a lock operation, by node and operation.", latencyBuckets), []string{"node", "op"}),
		nodeEvents: prometheus.NewCounterVec(prometheus.CounterOpts(opts("node_events_total",
			"Node events: restarts seen by the restart guard, evicting maxmemory-policies.")), []string{"node", "kind"}),
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.acquisitions, m.acquireTime, m.held, m.extensions, m.lost,
		m.unlocks, m.heldTime, m.nodeRequests, m.nodeErrors, m.nodeTime, m.nodeEvents}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// Observer returns the redlock.Observer that updates m; pass it to
// redlock.WithObserver. Its callbacks only update in-memory metrics.
func (m *Metrics) Observer() redlock.Observer {
	return redlock.Observer{
		Acquire: m.acquire,
		Extend:  m.extend,
		Unlock:  m.unlock,
		End:     m.end,
		Node:    m.node,
	}
}

// acquireOutcome is the outcome label of an acquisition: "granted" for ok.
func acquireOutcome(o redlock.Outcome) string {
	if o == redlock.OutcomeOK {
		return "granted"
	}
	return o.String()
}

func (m *Metrics) acquire(e redlock.AcquireEvent) {
	o := acquireOutcome(e.Outcome)
	m.acquisitions.WithLabelValues(o).Inc()
	m.acquireTime.WithLabelValues(o).Observe(e.Elapsed.Seconds())
	if e.Outcome == redlock.OutcomeOK {
		m.held.Inc()
	}
	m.nodes("acquire", e.Nodes)
}

func (m *Metrics) extend(e redlock.ExtendEvent) {
	kind := "extend"
	if e.Renewal {
		kind = "renewal"
	}
	m.extensions.WithLabelValues(kind, e.Outcome.String()).Inc()
	m.nodes(kind, e.Nodes)
}

func (m *Metrics) unlock(e redlock.UnlockEvent) {
	m.unlocks.WithLabelValues(e.Outcome.String()).Inc()
	m.nodes("unlock", e.Nodes)
}

func (m *Metrics) end(e redlock.EndEvent) {
	m.held.Dec()
	m.heldTime.Observe(e.Held.Seconds())
	if e.Lost {
		m.lost.Inc()
	}
}

// nodes counts the awaited node answers of one operation.
func (m *Metrics) nodes(op string, nodes []redlock.NodeVote) {
	for _, n := range nodes {
		if n.Vote == redlock.VotePending {
			continue
		}
		m.nodeRequests.WithLabelValues(n.Addr, op, n.Vote.String()).Inc()
		m.nodeTime.WithLabelValues(n.Addr, op).Observe(n.Latency.Seconds())
		if n.Vote == redlock.VoteFailed {
			m.nodeErrors.WithLabelValues(n.Addr, op).Inc()
		}
	}
}

func (m *Metrics) node(e redlock.NodeEvent) {
	m.nodeEvents.WithLabelValues(e.Addr, e.Kind.String()).Inc()
}
