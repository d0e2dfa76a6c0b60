"""Prometheus metrics of one node (a registry per node, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class NodeMetrics:
    """The metrics the runtime updates."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.term = Gauge("confman_raft_term", "Current Raft term", registry=r)
        self.role = Gauge(
            "confman_raft_role", "1 for this node's current role", ["role"], registry=r
        )
        self.leader_changes = Counter(
            "confman_raft_leader_changes", "Times the known leader changed", registry=r
        )
        self.elections = Counter(
            "confman_raft_elections", "Elections this node started", registry=r
        )
        self.commit_index = Gauge("confman_raft_commit_index", "Commit index", registry=r)
        self.applied_index = Gauge("confman_raft_applied_index", "Applied index", registry=r)
        self.last_index = Gauge("confman_raft_last_index", "Last log index", registry=r)
        self.lag_entries = Gauge(
            "confman_replication_lag_entries",
            "Entries a follower is behind the leader's log (leader only)",
            ["peer"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "confman_replication_last_ack_seconds",
            "Seconds since the follower last answered the leader (leader only)",
            ["peer"],
            registry=r,
        )
        self.commit_latency = Histogram(
            "confman_commit_latency_seconds",
            "From proposal to applied result",
            buckets=_LATENCY,
            registry=r,
        )
        self.loop_lag = Histogram(
            "confman_event_loop_lag_seconds",
            "How late the Raft clock woke up (a stall of the node's event loop)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.fsync_latency = Histogram(
            "confman_wal_fsync_seconds", "WAL write + fdatasync", buckets=_LATENCY, registry=r
        )
        self.apply_latency = Histogram(
            "confman_apply_seconds", "Applying one batch to SQLite", buckets=_LATENCY, registry=r
        )
        self.proposals = Counter(
            "confman_proposals", "Proposals accepted by this leader", registry=r
        )
        self.proposal_failures = Counter(
            "confman_proposal_failures", "Proposals that failed", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "confman_proposal_batch_size", "Proposals per log append", buckets=_BATCH, registry=r
        )
        self.snapshots = Counter(
            "confman_snapshots",
            "Raft log releases against the durable state database (the live database is the"
            " snapshot; no file is written; the name is kept for dashboards)",
            registry=r,
        )
        self.snapshots_installed = Counter(
            "confman_snapshots_installed", "Snapshots received and installed", registry=r
        )
        self.http_open = Gauge(
            "confman_http_connections_open", "Open HTTP API connections", registry=r
        )
        self.http_refused = Counter(
            "confman_http_connections_refused",
            "HTTP connections closed on arrival: over http.max_connections (reason=node) or "
            "http.max_connections_per_ip (reason=address)",
            ["reason"],
            registry=r,
        )
        self.http_timeouts = Counter(
            "confman_http_connection_timeouts",
            "HTTP connections closed by a deadline: an incomplete request head after "
            "http.request_head_timeout_s (phase=head), idle after http.keepalive_timeout_s "
            "(phase=idle), or a client that read none of its answers that long (phase=write)",
            ["phase"],
            registry=r,
        )
        self.http_write_pauses = Counter(
            "confman_http_write_pauses",
            "Times the fast HTTP front stopped answering a connection whose client was not "
            "reading its answers (until its write buffer drained)",
            registry=r,
        )
        self.host_refused = Counter(
            "confman_http_host_refused",
            "Requests refused (421) in the dev profile: their Host did not name this node",
            registry=r,
        )
        self.watch_subscribers = Gauge(
            "confman_watch_subscribers", "Open watches (streams and long polls)", registry=r
        )
        self.watch_refused = Counter(
            "confman_watch_refused",
            "Watches refused (503): the node's limit or its target's was reached",
            ["reason"],
            registry=r,
        )
        for reason in ("node", "key"):  # exported at 0 before the first refusal
            self.watch_refused.labels(reason)
        self.watch_pages_cut = Counter(
            "confman_watch_pages_cut",
            "Watch pages cut short by watch.page_bytes (the rest follows in the next page)",
            registry=r,
        )
        self.peer_refused = Counter(
            "confman_peer_refused",
            "Peer connections refused, by reason: tls, handshake, auth (wrong proof), "
            "non_member, mac (a frame failed its MAC check)",
            ["reason"],
            registry=r,
        )
        self.info = Gauge("confman_node_info", "Node identity", ["node_id"], registry=r)
        self.info.labels(node_id=node_id).set(1)
