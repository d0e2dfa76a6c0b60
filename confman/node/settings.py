"""The node's settings, each declared once.

``NodeConfig`` is the table: every field that a TOML file sets carries, in its ``metadata``, a
``Setting`` (``confman.node.settings_types``) with the TOML name (``http.max_body_bytes``), the
kind of value it takes, its bounds, its documentation line and the environment variable that
overrides it, if any; its Python type and default are the field's own. The loader
(``confman.node.config``), its error messages, the unknown-setting checks and the reference
``docs/config.md`` (``confman.node.settings_doc``) all come from it.

The nested tables (``[http.tls]``, ``[raft.tls]``, ``[[members]]``, ``[[api_keys]]``) and
``cluster_secret_file`` are read by hand in ``confman.node.config_checks``; their keys are
declared once in ``confman.node.settings_nested`` (``NESTED``), for the unknown-setting checks
and the docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from confman.node.peer_tls import PeerTLS
from confman.node.settings_types import (
    ADDRESS,
    BOOL,
    FLOAT,
    HAND,
    ID_PATTERN,
    INT,
    LIST,
    NON_NEGATIVE,
    PATH,
    POSITIVE,
    RANGE_MS,
    REQUIRED,
    SECONDS,
    STR,
    ApiKey,
    Bound,
    HttpTls,
    Member,
    Setting,
    at_least,
    one_of,
    toml,
)


def _host_port(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest if ":" in rest else f"{rest}:80"


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# ---------------------------------------------------------------------------------- the table
@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node needs to run; each field that a TOML file sets is declared here."""

    node_id: str = field(
        metadata=toml(
            "node_id",
            STR,
            "this node's id, one of the [[members]] ids",
            Bound(
                "letters, digits, . _ -",
                lambda v: ID_PATTERN.match(v) is not None,
                "{value!r} must match " + ID_PATTERN.pattern,
            ),
            env="CONFMAN_NODE_ID",
            example="node1",
        )
    )
    data_dir: Path = field(
        metadata=toml(
            "data_dir",
            PATH,
            "the node's log, snapshots and state",
            env="CONFMAN_DATA_DIR",
            example="data/node1",
        )
    )
    members: tuple[Member, ...] = field(
        metadata=toml("members", HAND, "every member of the cluster, this node included")
    )
    cluster_secret: bytes = field(
        metadata=toml(
            "cluster_secret",
            HAND,
            "shared by every node, at least 16 characters; or cluster_secret_file",
            env="CONFMAN_CLUSTER_SECRET",
        )
    )
    http_listen: tuple[str, int] = field(
        metadata=toml(
            "http.listen",
            ADDRESS,
            "where the HTTP API listens",
            derive=lambda v, me: _host_port(me.http),
            default_doc="host:port of this node's [[members]] http",
            example="127.0.0.1:6100",
        )
    )
    http_advertise: str = field(
        metadata=toml(
            "http.advertise",
            STR,
            "the URL other nodes and clients are sent to (redirects, forwarded writes)",
            derive=lambda v, me: me.http,
            default_doc="this node's [[members]] http",
            example="http://127.0.0.1:6100/",
        )
    )
    raft_listen: tuple[str, int] = field(
        metadata=toml(
            "raft.listen",
            ADDRESS,
            "where the peer (Raft) port listens",
            derive=lambda v, me: f"{me.raft[0]}:{me.raft[1]}",
            default_doc="this node's [[members]] raft",
            example="127.0.0.1:7100",
        )
    )
    api_keys: tuple[ApiKey, ...] = field(
        default=(), metadata=toml("api_keys", HAND, "the API keys and what they may do")
    )
    profile: str = field(
        default="prod",
        metadata=toml(
            "profile",
            STR,
            "dev: readable logs, plain-text and dev keys allowed, only Host values naming this "
            'node (CONFMAN_PROFILE may make a dev file "prod", never a prod file "dev")',
            one_of("prod", "dev", message="must be 'prod' or 'dev', got {value!r}"),
            env="CONFMAN_PROFILE",
        ),
    )
    max_body_bytes: int = field(
        default=1 << 20,
        metadata=toml("http.max_body_bytes", INT, "the largest request body accepted", POSITIVE),
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata=toml("http.cors_origins", LIST, "origins allowed by CORS")
    )
    election_timeout_ms: tuple[int, int] = field(
        default=(150, 300),
        metadata=toml(
            "raft.election_timeout_ms",
            RANGE_MS,
            "a follower that hears no leader for a random time in this range stands",
        ),
    )
    heartbeat_ratio: float = field(
        default=0.5,
        metadata=toml(
            "raft.heartbeat_ratio",
            FLOAT,
            "heartbeat = ratio x lower election timeout",
            Bound("in (0, 1)", lambda v: 0 < v < 1, "must be in (0, 1)"),
        ),
    )
    tick_ms: int = field(
        default=10,
        metadata=toml(
            "raft.tick_ms", INT, "the Raft clock, between 1 and a quarter of the lower timeout"
        ),
    )
    replication_timeout_ms: int = field(
        default=10_000,
        metadata=toml(
            "raft.replication_timeout_ms", INT, "how long a write waits to commit", POSITIVE
        ),
    )
    snapshot_interval: int = field(
        default=10_000,
        metadata=toml(
            "raft.snapshot_interval",
            INT,
            "unused since storage format 2 (the log is released by storage.durable_every_*)",
            POSITIVE,
        ),
    )
    snapshot_retain: int = field(
        default=3,
        metadata=toml(
            "raft.snapshot_retain",
            INT,
            "received snapshot files kept until installed (none stay after install)",
            POSITIVE,
        ),
    )
    snapshot_rate_bytes_s: int = field(
        default=32 << 20,
        metadata=toml(
            "raft.snapshot_rate_bytes_s",
            INT,
            "pace of a snapshot streamed to a peer, bytes per second (0: unlimited)",
            NON_NEGATIVE,
        ),
    )
    durable_every_entries: int = field(
        default=1000,
        metadata=toml(
            "storage.durable_every_entries",
            INT,
            "applied entries between two fsyncs of the state database (and log releases)",
            POSITIVE,
        ),
    )
    durable_every_ms: int = field(
        default=500,
        metadata=toml(
            "storage.durable_every_ms",
            INT,
            "at most this long between an applied entry and the state's fsync",
            POSITIVE,
        ),
    )
    sqlite_wal_limit_bytes: int = field(
        default=16 << 20,
        metadata=toml(
            "storage.wal_limit_bytes",
            INT,
            "bound of the SQLite WAL: past half of it, it is reset while apply is parked",
            POSITIVE,
        ),
    )
    sqlite_park_max_ms: int = field(
        default=20,
        metadata=toml(
            "storage.park_max_ms",
            INT,
            "longest pause of apply while the SQLite WAL is reset",
            POSITIVE,
        ),
    )
    vacuum_threshold_bytes: int = field(
        default=64 << 20,
        metadata=toml(
            "storage.vacuum_threshold_bytes",
            INT,
            "free pages above this are returned to the file system between apply slices",
            POSITIVE,
        ),
    )
    raft_tls: PeerTLS | None = field(
        default=None, metadata=toml("raft.tls", HAND, "mutual TLS between the nodes")
    )
    idempotency_ttl_s: int = field(
        default=86_400,
        metadata=toml(
            "idempotency_ttl_s", INT, "how long an Idempotency-Key's answer is remembered", POSITIVE
        ),
    )
    forward_writes: bool = field(
        default=False,
        metadata=toml(
            "http.forward_writes", BOOL, "a follower proxies writes to the leader instead of 307"
        ),
    )
    fast_path: bool = field(
        default=True,
        metadata=toml(
            "http.fast_path", BOOL, "answer plain GETs/PUTs of one entry without aiohttp"
        ),
    )
    http_request_head_timeout_s: float = field(
        default=10.0,
        metadata=toml(
            "http.request_head_timeout_s",
            FLOAT,
            "a request head must be complete this long after it starts",
            SECONDS,
        ),
    )
    http_keepalive_timeout_s: float = field(
        default=75.0,
        metadata=toml(
            "http.keepalive_timeout_s",
            FLOAT,
            "an idle keep-alive connection is closed after this long",
            SECONDS,
        ),
    )
    http_max_connections: int = field(
        default=1024,
        metadata=toml(
            "http.max_connections",
            INT,
            "open HTTP connections per node; more are closed at once",
            POSITIVE,
        ),
    )
    http_max_connections_per_ip: int = field(
        default=128,
        metadata=toml(
            "http.max_connections_per_ip", INT, "open HTTP connections per client address", POSITIVE
        ),
    )
    http_tls: HttpTls | None = field(
        default=None,
        metadata=toml("http.tls", HAND, "HTTPS (advertise and members' http then use https://)"),
    )
    history_retention_entries: int = field(
        default=0,
        metadata=toml(
            "history.retention_entries",
            INT,
            "keep only the change history of the last N log indexes (a hard cut)",
            NON_NEGATIVE,
        ),
    )
    history_retention_s: int = field(
        default=0,
        metadata=toml(
            "history.retention_s",
            INT,
            "keep only the change history of the last N seconds (a hard cut)",
            NON_NEGATIVE,
        ),
    )
    history_compact_interval_ms: int = field(
        default=5_000,
        metadata=toml(
            "history.compact_interval_ms",
            INT,
            "how often the leader checks whether to compact the history",
            POSITIVE,
        ),
    )
    history_prune: bool = field(
        default=True,
        metadata=toml(
            "history.prune",
            BOOL,
            "the leader proposes pruning by the replicated retention policy, which keeps the"
            " newest 100 versions of every key and everything younger than 7 days",
        ),
    )
    watch_max_subscribers: int = field(
        default=1024,
        metadata=toml(
            "watch.max_subscribers",
            INT,
            "open watches (streams and long polls) per node; over it: 503 + Retry-After",
            POSITIVE,
        ),
    )
    watch_max_per_key: int = field(
        default=256,
        metadata=toml(
            "watch.max_per_key",
            INT,
            "open watches per node of one target (key, prefix, namespace or every namespace), "
            "at most watch.max_subscribers",
            POSITIVE,
            derive=lambda v, me: min(256, v["watch_max_subscribers"]),
            default_doc="256, or watch.max_subscribers if lower",
            example=256,
        ),
    )
    watch_page_bytes: int = field(
        default=1 << 20,
        metadata=toml(
            "watch.page_bytes",
            INT,
            "a long-poll answer or stream batch holds about this much (500 changes at most; "
            "one log index is never split)",
            POSITIVE,
            at_least(4096),
        ),
    )
    log_level: str = field(
        default="info",
        metadata=toml(
            "log.level",
            STR,
            "how much the node logs",
            Bound(
                "debug, info, warning or error",
                lambda v: v.upper() in _LEVELS,
                "must be debug, info, warning or error",
            ),
        ),
    )
    log_format: str = field(
        default="json",
        metadata=toml(
            "log.format",
            STR,
            "one JSON object a line, or readable text",
            one_of("json", "text", message="must be 'json' or 'text'"),
            derive=lambda v, me: "text" if v["profile"] == "dev" else "json",
            default_doc='"json"; "text" in the dev profile',
            example="json",
        ),
    )
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def member(self) -> Member:
        return next(m for m in self.members if m.id == self.node_id)

    def peer(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    # Derived Raft timing, in ticks.
    @property
    def election_ticks(self) -> tuple[int, int]:
        lo, hi = self.election_timeout_ms
        return max(2, round(lo / self.tick_ms)), max(3, round(hi / self.tick_ms))

    @property
    def heartbeat_ticks(self) -> int:
        return max(1, int(self.election_ticks[0] * self.heartbeat_ratio))


def _collect() -> tuple[Setting, ...]:
    out = []
    for f in fields(NodeConfig):
        spec = f.metadata.get("setting")
        if isinstance(spec, Setting):
            out.append(
                Setting(
                    spec.key,
                    spec.kind,
                    spec.doc,
                    spec.bounds,
                    spec.env,
                    spec.derive,
                    spec.default_doc,
                    spec.example,
                    f.name,
                    REQUIRED if f.default is MISSING else f.default,
                )
            )
    return tuple(out)


#: Every setting, in NodeConfig's order.
SETTINGS: Final = _collect()
#: The sections a file may hold, besides the top level.
SECTIONS: Final = ("http", "history", "watch", "raft", "storage", "log")
