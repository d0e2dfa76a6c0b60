"""Node configuration: a TOML file per node, overridable by environment variables and flags.

Every mistake is reported at start-up as a ``ConfigError`` naming the offending field.

```toml
node_id = "node1"
data_dir = "data/node1"
profile = "prod"                  # or "dev": readable logs, plain-text and dev keys allowed,
                                  # only Host values naming this node (CONFMAN_PROFILE may
                                  # make a dev file "prod", never a prod file "dev")
cluster_secret = "..."            # or cluster_secret_file = "/etc/confman/secret"

[http]
listen = "127.0.0.1:6100"
advertise = "http://127.0.0.1:6100/"
max_body_bytes = 1048576
cors_origins = []
forward_writes = false            # a follower proxies writes to the leader instead of 307
fast_path = true                  # answer plain GETs/PUTs of one entry without aiohttp
request_head_timeout_s = 10.0     # a request head must be complete this long after it starts
keepalive_timeout_s = 75.0        # an idle keep-alive connection is closed after this long
max_connections = 1024            # open HTTP connections per node; more are closed at once
max_connections_per_ip = 128      # open HTTP connections per client address

[http.tls]                        # HTTPS (advertise and members' http then use https://)
cert_file = "/etc/confman/node.pem"   # reloaded with key_file on SIGHUP
key_file = "/etc/confman/node.key"
client_ca_file = "/etc/confman/clients.pem"  # optional: require client certificates (mTLS)

[history]                         # change history: the audit log, which watches replay
retention_entries = 0             # keep changes of the last N log indexes (0: no limit)
retention_s = 0                   # keep changes of the last N seconds (0: no limit)
compact_interval_ms = 5000        # how often the leader checks whether to compact

[watch]                           # GET /api/v1/watch; over a limit: 503 + Retry-After
max_subscribers = 1024            # open watches (streams and long polls) per node
max_per_key = 256                 # open watches per node of one target (key, prefix,
                                  # namespace, or every namespace)
page_bytes = 1048576              # a long-poll answer or stream batch holds about this much
                                  # (500 changes at most; one log index is never split)

[raft]
listen = "127.0.0.1:7100"
election_timeout_ms = [150, 300]
heartbeat_ratio = 0.5             # heartbeat = ratio x lower election timeout
tick_ms = 10
replication_timeout_ms = 10000
snapshot_interval = 10000         # applied entries between snapshots
snapshot_retain = 3

[raft.tls]                        # mutual TLS between the nodes (on all of them or none)
cert_file = "/etc/confman/peer.pem"   # this node's certificate, signed by ca_file
key_file = "/etc/confman/peer.key"
ca_file = "/etc/confman/peer-ca.pem"  # the CA that signs every node's certificate
check_hostname = true             # a peer's certificate must name the address dialled

[[members]]
id = "node1"
raft = "127.0.0.1:7100"
http = "http://127.0.0.1:6100/"

[[api_keys]]
name = "Operations"
key_sha256 = "<hex sha-256 of the key>"   # see `confman keys hash`
roles = ["admin"]
namespaces = ["*"]
```
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confman.node.peer_tls import PeerTLS, PeerTLSError, parse_tls_table

ROLES = ("viewer", "editor", "publisher", "admin")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The published keys of ``confman dev`` (confman.devconfig.DEV_KEYS): refused outside the
#: dev profile, in plain text or as their SHA-256.
WELL_KNOWN_DEV_KEYS = ("confman_dev_abc123", "confman_dev_reader")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field."""


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member as every node knows it."""

    id: str
    raft: tuple[str, int]
    http: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: only its SHA-256 is kept."""

    name: str
    key_sha256: str
    roles: tuple[str, ...]
    namespaces: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class HttpTls:
    """``[http.tls]``: the API's certificate and key, and the CA of client certificates."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node needs to run."""

    node_id: str
    data_dir: Path
    members: tuple[Member, ...]
    cluster_secret: bytes
    http_listen: tuple[str, int]
    http_advertise: str
    raft_listen: tuple[str, int]
    api_keys: tuple[ApiKey, ...] = ()
    profile: str = "prod"
    max_body_bytes: int = 1 << 20
    cors_origins: tuple[str, ...] = ()
    election_timeout_ms: tuple[int, int] = (150, 300)
    heartbeat_ratio: float = 0.5
    tick_ms: int = 10
    replication_timeout_ms: int = 10_000
    snapshot_interval: int = 10_000
    snapshot_retain: int = 3
    raft_tls: PeerTLS | None = None
    idempotency_ttl_s: int = 86_400
    forward_writes: bool = False
    fast_path: bool = True
    http_request_head_timeout_s: float = 10.0
    http_keepalive_timeout_s: float = 75.0
    http_max_connections: int = 1024
    http_max_connections_per_ip: int = 128
    http_tls: HttpTls | None = None
    history_retention_entries: int = 0
    history_retention_s: int = 0
    history_compact_interval_ms: int = 5_000
    watch_max_subscribers: int = 1024
    watch_max_per_key: int = 256
    watch_page_bytes: int = 1 << 20
    log_level: str = "info"
    log_format: str = "json"
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


def hash_key(key: str) -> str:
    """The hex SHA-256 under which an API key is stored in the config."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_address(value: object, field_name: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) → (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{field_name}: expected 'host:port', got {value!r}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{field_name}: port must be a number, got {port_s!r}") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"{field_name}: invalid address {value!r}")
    return host, port


def _get(
    d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...
) -> Any:
    if key not in d:
        if default is ...:
            raise ConfigError(f"{where}{key}: required")
        return default
    v = d[key]
    if isinstance(v, bool) and kind in (int, float):
        raise ConfigError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {v!r}")
    if not isinstance(v, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: expected {name}, got {v!r}")
    return v


def _check_unknown(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown setting")


def from_mapping(raw: Mapping[str, Any], base_dir: Path | None = None) -> NodeConfig:
    """Build and validate a config from parsed TOML (or an equivalent mapping)."""
    base = base_dir or Path.cwd()
    _check_unknown(
        raw,
        {
            "node_id",
            "data_dir",
            "profile",
            "cluster_secret",
            "cluster_secret_file",
            "http",
            "raft",
            "members",
            "api_keys",
            "log",
            "idempotency_ttl_s",
            "history",
            "watch",
        },
        "",
    )
    node_id = _get(raw, "node_id", str, "")
    if not _ID.match(node_id):
        raise ConfigError(f"node_id: {node_id!r} must match {_ID.pattern}")
    profile = _get(raw, "profile", str, "", "prod")
    if profile not in ("prod", "dev"):
        raise ConfigError(f"profile: must be 'prod' or 'dev', got {profile!r}")
    data_dir = Path(_get(raw, "data_dir", str, ""))
    if not data_dir.is_absolute():
        data_dir = base / data_dir

    secret: bytes
    if "cluster_secret_file" in raw:
        path = Path(_get(raw, "cluster_secret_file", str, ""))
        try:
            secret = (path if path.is_absolute() else base / path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cluster_secret_file: cannot read {path}: {exc}") from None
    else:
        secret = _get(raw, "cluster_secret", str, "").encode("utf-8")
    if len(secret) < 16:
        raise ConfigError("cluster_secret: must be at least 16 characters")

    http = _get(raw, "http", dict, "", {})
    _check_unknown(
        http,
        {
            "listen",
            "advertise",
            "max_body_bytes",
            "cors_origins",
            "forward_writes",
            "fast_path",
            "request_head_timeout_s",
            "keepalive_timeout_s",
            "max_connections",
            "max_connections_per_ip",
            "tls",
        },
        "http.",
    )
    history = _get(raw, "history", dict, "", {})
    _check_unknown(history, {"retention_entries", "retention_s", "compact_interval_ms"}, "history.")
    watch = _get(raw, "watch", dict, "", {})
    _check_unknown(watch, {"max_subscribers", "max_per_key", "page_bytes"}, "watch.")
    watch_max = _positive(watch, "max_subscribers", 1024, "watch.")
    watch_per_key = _positive(watch, "max_per_key", min(256, watch_max), "watch.")
    if watch_per_key > watch_max:
        raise ConfigError("watch.max_per_key: must not exceed watch.max_subscribers")
    watch_page = _positive(watch, "page_bytes", 1 << 20, "watch.")
    if watch_page < 4096:
        raise ConfigError("watch.page_bytes: must be at least 4096")
    raft = _get(raw, "raft", dict, "", {})
    _check_unknown(
        raft,
        {
            "listen",
            "election_timeout_ms",
            "heartbeat_ratio",
            "tick_ms",
            "replication_timeout_ms",
            "snapshot_interval",
            "snapshot_retain",
            "tls",
        },
        "raft.",
    )
    log = _get(raw, "log", dict, "", {})
    _check_unknown(log, {"level", "format"}, "log.")

    members_raw = _get(raw, "members", list, "")
    members: list[Member] = []
    for i, m in enumerate(members_raw):
        where = f"members[{i}]."
        if not isinstance(m, dict):
            raise ConfigError(f"members[{i}]: expected a table")
        _check_unknown(m, {"id", "raft", "http"}, where)
        mid = _get(m, "id", str, where)
        if not _ID.match(mid):
            raise ConfigError(f"{where}id: {mid!r} must match {_ID.pattern}")
        http_url = _get(m, "http", str, where)
        if not http_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}http: must be an http(s) URL, got {http_url!r}")
        members.append(
            Member(
                mid,
                parse_address(_get(m, "raft", str, where), f"{where}raft"),
                http_url if http_url.endswith("/") else http_url + "/",
            )
        )
    ids = [m.id for m in members]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"members: duplicate id {dupes[0]!r}")
    if node_id not in ids:
        raise ConfigError(f"members: does not contain this node ({node_id!r})")
    me = members[ids.index(node_id)]

    keys: list[ApiKey] = []
    for i, k in enumerate(_get(raw, "api_keys", list, "", [])):
        where = f"api_keys[{i}]."
        if not isinstance(k, dict):
            raise ConfigError(f"api_keys[{i}]: expected a table")
        _check_unknown(k, {"name", "key_sha256", "key", "roles", "namespaces"}, where)
        name = _get(k, "name", str, where)
        if "key" in k:
            if profile != "dev":
                raise ConfigError(
                    f"{where}key: plain-text keys are only allowed in the dev profile; "
                    "store key_sha256 (see `confman keys hash`)"
                )
            digest = hash_key(_get(k, "key", str, where))
        else:
            digest = _get(k, "key_sha256", str, where).lower()
            if not _HEX64.match(digest):
                raise ConfigError(f"{where}key_sha256: must be 64 hex characters")
            dev_key = _DEV_DIGESTS.get(digest)
            if dev_key is not None and profile != "dev":
                raise ConfigError(
                    f"{where}key_sha256: is the well-known development key {dev_key!r}, "
                    "which is only allowed in the dev profile; generate a secret key"
                )
        roles = _get(k, "roles", list, where)
        if not roles:
            raise ConfigError(f"{where}roles: must not be empty")
        for r in roles:
            if r not in ROLES:
                raise ConfigError(f"{where}roles: unknown role {r!r} (known: {', '.join(ROLES)})")
        namespaces = _get(k, "namespaces", list, where, ["*"])
        if not namespaces or not all(isinstance(n, str) and n for n in namespaces):
            raise ConfigError(f"{where}namespaces: must be a non-empty list of names or '*'")
        keys.append(ApiKey(name, digest, tuple(roles), tuple(namespaces)))
    digests = [k.key_sha256 for k in keys]
    if len(set(digests)) != len(digests):
        raise ConfigError("api_keys: the same key is configured twice")

    election = _get(raft, "election_timeout_ms", list, "raft.", [150, 300])
    if (
        len(election) != 2
        or not all(isinstance(x, int) for x in election)
        or not 0 < election[0] < election[1]
    ):
        raise ConfigError("raft.election_timeout_ms: expected [low, high] with 0 < low < high")
    tick_ms = _get(raft, "tick_ms", int, "raft.", 10)
    if not 1 <= tick_ms <= election[0] // 4:
        raise ConfigError("raft.tick_ms: must be between 1 and a quarter of the lower timeout")
    ratio = float(_get(raft, "heartbeat_ratio", (int, float), "raft.", 0.5))
    if not 0 < ratio < 1:
        raise ConfigError("raft.heartbeat_ratio: must be in (0, 1)")
    cfg = NodeConfig(
        node_id=node_id,
        data_dir=data_dir,
        members=tuple(members),
        cluster_secret=secret,
        http_listen=parse_address(
            _get(http, "listen", str, "http.", _host_port(me.http)), "http.listen"
        ),
        http_advertise=_get(http, "advertise", str, "http.", me.http),
        raft_listen=parse_address(
            _get(raft, "listen", str, "raft.", f"{me.raft[0]}:{me.raft[1]}"), "raft.listen"
        ),
        api_keys=tuple(keys),
        profile=profile,
        max_body_bytes=_positive(http, "max_body_bytes", 1 << 20, "http."),
        cors_origins=tuple(_get(http, "cors_origins", list, "http.", [])),
        election_timeout_ms=(election[0], election[1]),
        heartbeat_ratio=ratio,
        tick_ms=tick_ms,
        replication_timeout_ms=_positive(raft, "replication_timeout_ms", 10_000, "raft."),
        snapshot_interval=_positive(raft, "snapshot_interval", 10_000, "raft."),
        snapshot_retain=_positive(raft, "snapshot_retain", 3, "raft."),
        raft_tls=_raft_tls(raft, base),
        idempotency_ttl_s=_positive(raw, "idempotency_ttl_s", 86_400, ""),
        forward_writes=_get(http, "forward_writes", bool, "http.", False),
        fast_path=_get(http, "fast_path", bool, "http.", True),
        http_request_head_timeout_s=_seconds(http, "request_head_timeout_s", 10.0, "http."),
        http_keepalive_timeout_s=_seconds(http, "keepalive_timeout_s", 75.0, "http."),
        http_max_connections=_positive(http, "max_connections", 1024, "http."),
        http_max_connections_per_ip=_positive(http, "max_connections_per_ip", 128, "http."),
        http_tls=_http_tls(http, base),
        history_retention_entries=_non_negative(history, "retention_entries", "history."),
        history_retention_s=_non_negative(history, "retention_s", "history."),
        history_compact_interval_ms=_positive(history, "compact_interval_ms", 5_000, "history."),
        watch_max_subscribers=watch_max,
        watch_max_per_key=watch_per_key,
        watch_page_bytes=watch_page,
        log_level=_get(log, "level", str, "log.", "info"),
        log_format=_get(log, "format", str, "log.", "text" if profile == "dev" else "json"),
    )
    if cfg.http_tls is not None and not cfg.http_advertise.startswith("https://"):
        raise ConfigError(
            "http.advertise: must be an https:// URL when [http.tls] is set "
            f"(got {cfg.http_advertise!r}; use https in this node's [[members]] http too)"
        )
    if cfg.log_format not in ("json", "text"):
        raise ConfigError("log.format: must be 'json' or 'text'")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log.level: must be debug, info, warning or error")
    return cfg


def _http_tls(http: Mapping[str, Any], base: Path) -> HttpTls | None:
    """``[http.tls]``, its files resolved against the config's directory and checked."""
    if "tls" not in http:
        return None
    tls = _get(http, "tls", dict, "http.")
    _check_unknown(tls, {"cert_file", "key_file", "client_ca_file"}, "http.tls.")
    files: dict[str, Path | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        raw = _get(tls, name, str, "http.tls.", None if name == "client_ca_file" else ...)
        if raw is None:
            files[name] = None
            continue
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"http.tls.{name}: cannot read {path}")
        files[name] = path
    cert, key = files["cert_file"], files["key_file"]
    assert cert is not None and key is not None
    return HttpTls(cert, key, files["client_ca_file"])


def _raft_tls(raft: Mapping[str, Any], base: Path) -> PeerTLS | None:
    """``[raft.tls]`` (see ``confman.node.peer_tls``), or None for plain TCP."""
    if "tls" not in raft:
        return None
    try:
        return parse_tls_table(_get(raft, "tls", dict, "raft."), base)
    except PeerTLSError as exc:
        raise ConfigError(str(exc)) from None


def _positive(d: Mapping[str, Any], key: str, default: int, where: str) -> int:
    v = _get(d, key, int, where, default)
    if v <= 0:
        raise ConfigError(f"{where}{key}: must be > 0")
    return int(v)


def _seconds(d: Mapping[str, Any], key: str, default: float, where: str) -> float:
    v = _get(d, key, (int, float), where, default)
    if isinstance(v, bool) or not v > 0:
        raise ConfigError(f"{where}{key}: must be a number of seconds > 0")
    return float(v)


def _non_negative(d: Mapping[str, Any], key: str, where: str) -> int:
    v = _get(d, key, int, where, 0)
    if v < 0:
        raise ConfigError(f"{where}{key}: must be >= 0 (0 means no limit)")
    return int(v)


def _host_port(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest if ":" in rest else f"{rest}:80"


_DEV_DIGESTS = {hash_key(k): k for k in WELL_KNOWN_DEV_KEYS}

ENV_OVERRIDES = {
    "CONFMAN_NODE_ID": "node_id",
    "CONFMAN_DATA_DIR": "data_dir",
    "CONFMAN_CLUSTER_SECRET": "cluster_secret",
}


def _env_profile(raw: dict[str, Any], value: str) -> None:
    """Apply ``CONFMAN_PROFILE``: it may make a dev file "prod", never loosen a file."""
    if value not in ("prod", "dev"):
        raise ConfigError(f"CONFMAN_PROFILE: must be 'prod' or 'dev', got {value!r}")
    file_profile = raw.get("profile", "prod")
    if value == "dev" and file_profile != "dev":
        raise ConfigError(
            f"CONFMAN_PROFILE: 'dev' cannot loosen a file whose profile is {file_profile!r} "
            "(the environment may only make the profile stricter)"
        )
    raw["profile"] = value


def load(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Read a TOML file; environment variables then explicit overrides win over it
    (``CONFMAN_PROFILE`` only to make the profile stricter)."""
    p = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    env = os.environ if env is None else env
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            raw[key] = env[var]
            if key == "cluster_secret":
                raw.pop("cluster_secret_file", None)
    if env.get("CONFMAN_PROFILE"):
        _env_profile(raw, env["CONFMAN_PROFILE"])
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return from_mapping(raw, p.parent.resolve())


__all__ = [
    "ROLES",
    "WELL_KNOWN_DEV_KEYS",
    "ApiKey",
    "ConfigError",
    "HttpTls",
    "Member",
    "NodeConfig",
    "from_mapping",
    "hash_key",
    "load",
    "parse_address",
]
