package redlock

import (
	"context"
	"log/slog"
)

// SlogObserver returns an Observer that logs the Client's events to logger
// (slog.Default() if nil), for WithObserver:
//
//   - at Warn: a lock lost by auto-extension, a node restart (restart
//     guard), a node whose maxmemory-policy can evict lock keys (in place
//     of the default warning of WithEvictionWarning), a failed renewal, an Extend or
//     Unlock that found the lock lost or could not reach a quorum, an
//     acquisition that could not reach a quorum, and every node that failed
//     in an operation (one record per node, with its address and error);
//   - at Debug: grants, contended and cancelled attempts, extensions,
//     renewals, unlocks and other lock ends.
//
// Records carry the key, the outcome, timings and the vote counts; node
// addresses are host:port or pool[i], never credentials, and lock tokens are
// not logged. Records below the logger's level cost one Enabled call. Every
// message starts with "redlock: ".
func SlogObserver(logger *slog.Logger) Observer {
	if logger == nil {
		logger = slog.Default()
	}
	s := slogObserver{logger}
	return Observer{Acquire: s.acquire, Extend: s.extend, Unlock: s.unlock, End: s.end, Node: s.node}
}

type slogObserver struct{ l *slog.Logger }

func (s slogObserver) log(level slog.Level, msg string, attrs ...slog.Attr) {
	s.l.LogAttrs(context.Background(), level, msg, attrs...)
}

func (s slogObserver) enabled(level slog.Level) bool {
	return s.l.Enabled(context.Background(), level)
}

// nodes logs each failed node at Warn.
func (s slogObserver) nodes(op, key string, nodes []NodeVote) {
	if !s.enabled(slog.LevelWarn) {
		return
	}
	for _, n := range nodes {
		if n.Vote == VoteFailed {
			s.log(slog.LevelWarn, "redlock: node error", slog.String("op", op), slog.String("key", key),
				slog.String("node", n.Addr), slog.Duration("latency", n.Latency), slog.Any("error", n.Err))
		}
	}
}

// voteCounts summarises nodes as a group: yes, no, failed, pending.
func voteCounts(nodes []NodeVote) slog.Attr {
	var c [4]int64
	for _, n := range nodes {
		if int(n.Vote) < len(c) {
			c[n.Vote]++
		}
	}
	return slog.Group("votes", slog.Int64("yes", c[VoteYes]), slog.Int64("no", c[VoteNo]),
		slog.Int64("failed", c[VoteFailed]), slog.Int64("pending", c[VotePending]))
}

func (s slogObserver) acquire(e AcquireEvent) {
	s.nodes("acquire", e.Key, e.Nodes)
	level, msg := slog.LevelDebug, "redlock: lock acquired"
	switch e.Outcome {
	case OutcomeOK:
	case OutcomeUnreachable:
		level, msg = slog.LevelWarn, "redlock: lock not obtained"
	default:
		msg = "redlock: lock not obtained"
	}
	if !s.enabled(level) {
		return
	}
	attrs := []slog.Attr{slog.String("key", e.Key), slog.String("outcome", e.Outcome.String()),
		slog.Duration("ttl", e.TTL), slog.Duration("elapsed", e.Elapsed), voteCounts(e.Nodes)}
	if e.Outcome == OutcomeOK {
		attrs = append(attrs, slog.Duration("validity", e.Validity))
		if e.Fence != 0 {
			attrs = append(attrs, slog.Uint64("fence", e.Fence))
		}
	} else {
		attrs = append(attrs, slog.Any("error", e.Err))
	}
	s.log(level, msg, attrs...)
}

func (s slogObserver) extend(e ExtendEvent) {
	op, msg := "extend", "redlock: lock extended"
	if e.Renewal {
		op, msg = "renew", "redlock: lock renewed"
	}
	s.nodes(op, e.Key, e.Nodes)
	level := slog.LevelDebug
	if e.Outcome != OutcomeOK {
		level, msg = slog.LevelWarn, "redlock: extension failed"
		if e.Renewal {
			msg = "redlock: renewal failed"
		}
	}
	if !s.enabled(level) {
		return
	}
	attrs := []slog.Attr{slog.String("key", e.Key), slog.String("outcome", e.Outcome.String()),
		slog.Duration("ttl", e.TTL), slog.Duration("elapsed", e.Elapsed), slog.Duration("validity", e.Validity), voteCounts(e.Nodes)}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("error", e.Err))
	}
	s.log(level, msg, attrs...)
}

func (s slogObserver) unlock(e UnlockEvent) {
	s.nodes("unlock", e.Key, e.Nodes)
	level, msg := slog.LevelDebug, "redlock: lock released"
	if e.Outcome != OutcomeOK {
		level, msg = slog.LevelWarn, "redlock: unlock failed"
	}
	if !s.enabled(level) {
		return
	}
	attrs := []slog.Attr{slog.String("key", e.Key), slog.String("outcome", e.Outcome.String()),
		slog.Duration("elapsed", e.Elapsed), slog.Duration("held", e.Held), voteCounts(e.Nodes)}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("error", e.Err))
	}
	s.log(level, msg, attrs...)
}

func (s slogObserver) end(e EndEvent) {
	level, msg := slog.LevelDebug, "redlock: lock ended"
	if e.Lost {
		level, msg = slog.LevelWarn, "redlock: lock lost"
	}
	if !s.enabled(level) {
		return
	}
	s.log(level, msg, slog.String("key", e.Key), slog.Duration("held", e.Held), slog.Any("error", e.Err))
}

func (s slogObserver) node(e NodeEvent) {
	switch e.Kind {
	case NodeRestarted:
		s.log(slog.LevelWarn, "redlock: node restarted; held out of quorums for the restart guard window",
			slog.String("node", e.Addr), slog.String("detail", e.Detail))
	case NodeEvictionRisk:
		s.log(slog.LevelWarn, "redlock: node's maxmemory-policy can evict lock keys and let a second holder in; set maxmemory-policy noeviction",
			slog.String("node", e.Addr), slog.String("maxmemory_policy", e.Detail))
	}
}
