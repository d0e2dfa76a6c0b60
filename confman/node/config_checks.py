"""What the settings table cannot say: the hand-read tables and the rules across fields.

``[[members]]``, ``[[api_keys]]`` (with the refusal of plain-text and well-known dev keys
outside the dev profile), ``[http.tls]`` and ``[raft.tls]`` (their files resolved against the
config's directory and checked), ``cluster_secret``/``cluster_secret_file``, and the rules
that tie one setting to another (``raft.tick_ms`` against the election timeout,
``watch.max_per_key`` against ``watch.max_subscribers``, HTTPS advertise with ``[http.tls]``).
Their keys are declared in ``confman.node.settings.NESTED``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confman.node.peer_tls import PeerTLS, PeerTLSError, parse_tls_table
from confman.node.settings import NodeConfig
from confman.node.settings_nested import allowed_keys
from confman.node.settings_types import (
    ID_PATTERN,
    ROLES,
    ApiKey,
    ConfigError,
    HttpTls,
    Member,
    parse_address,
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The published keys of ``confman dev`` (confman.devconfig.DEV_KEYS): refused outside the
#: dev profile, in plain text or as their SHA-256.
WELL_KNOWN_DEV_KEYS = ("confman_dev_abc123", "confman_dev_reader")


def hash_key(key: str) -> str:
    """The hex SHA-256 under which an API key is stored in the config."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_DEV_DIGESTS = {hash_key(k): k for k in WELL_KNOWN_DEV_KEYS}
_REQUIRED: Any = ...


def get(d: Mapping[str, Any], key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    """``d[key]``, which must be a ``kind``; ``default`` when absent (required without one)."""
    if key not in d:
        if default is _REQUIRED:
            raise ConfigError(f"{where}{key}: required")
        return default
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise ConfigError(f"{where}{key}: expected {kind.__name__}, got {v!r}")
    return v


def check_unknown(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown setting")


def read_secret(raw: Mapping[str, Any], base: Path) -> bytes:
    """``cluster_secret``, or the contents of ``cluster_secret_file``."""
    secret: bytes
    if "cluster_secret_file" in raw:
        path = Path(get(raw, "cluster_secret_file", str, ""))
        try:
            secret = (path if path.is_absolute() else base / path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cluster_secret_file: cannot read {path}: {exc}") from None
    else:
        secret = get(raw, "cluster_secret", str, "").encode("utf-8")
    if len(secret) < 16:
        raise ConfigError("cluster_secret: must be at least 16 characters")
    return secret


def read_members(raw: Mapping[str, Any], node_id: str) -> tuple[tuple[Member, ...], Member]:
    """``[[members]]``, and this node's entry in it."""
    members: list[Member] = []
    for i, m in enumerate(get(raw, "members", list, "")):
        where = f"members[{i}]."
        if not isinstance(m, dict):
            raise ConfigError(f"members[{i}]: expected a table")
        check_unknown(m, allowed_keys("members"), where)
        mid = get(m, "id", str, where)
        if not ID_PATTERN.match(mid):
            raise ConfigError(f"{where}id: {mid!r} must match {ID_PATTERN.pattern}")
        http_url = get(m, "http", str, where)
        if not http_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}http: must be an http(s) URL, got {http_url!r}")
        members.append(
            Member(
                mid,
                parse_address(get(m, "raft", str, where), f"{where}raft"),
                http_url if http_url.endswith("/") else http_url + "/",
            )
        )
    ids = [m.id for m in members]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"members: duplicate id {dupes[0]!r}")
    if node_id not in ids:
        raise ConfigError(f"members: does not contain this node ({node_id!r})")
    return tuple(members), members[ids.index(node_id)]


def read_api_keys(raw: Mapping[str, Any], profile: str) -> tuple[ApiKey, ...]:
    """``[[api_keys]]``: plain-text keys and the well-known dev keys only in the dev profile."""
    keys: list[ApiKey] = []
    for i, k in enumerate(get(raw, "api_keys", list, "", [])):
        where = f"api_keys[{i}]."
        if not isinstance(k, dict):
            raise ConfigError(f"api_keys[{i}]: expected a table")
        check_unknown(k, allowed_keys("api_keys"), where)
        name = get(k, "name", str, where)
        if "key" in k:
            if profile != "dev":
                raise ConfigError(
                    f"{where}key: plain-text keys are only allowed in the dev profile; "
                    "store key_sha256 (see `confman keys hash`)"
                )
            digest = hash_key(get(k, "key", str, where))
        else:
            digest = get(k, "key_sha256", str, where).lower()
            if not _HEX64.match(digest):
                raise ConfigError(f"{where}key_sha256: must be 64 hex characters")
            dev_key = _DEV_DIGESTS.get(digest)
            if dev_key is not None and profile != "dev":
                raise ConfigError(
                    f"{where}key_sha256: is the well-known development key {dev_key!r}, "
                    "which is only allowed in the dev profile; generate a secret key"
                )
        roles = get(k, "roles", list, where)
        if not roles:
            raise ConfigError(f"{where}roles: must not be empty")
        for r in roles:
            if r not in ROLES:
                raise ConfigError(f"{where}roles: unknown role {r!r} (known: {', '.join(ROLES)})")
        namespaces = get(k, "namespaces", list, where, ["*"])
        if not namespaces or not all(isinstance(n, str) and n for n in namespaces):
            raise ConfigError(f"{where}namespaces: must be a non-empty list of names or '*'")
        keys.append(ApiKey(name, digest, tuple(roles), tuple(namespaces)))
    digests = [k.key_sha256 for k in keys]
    if len(set(digests)) != len(digests):
        raise ConfigError("api_keys: the same key is configured twice")
    return tuple(keys)


def read_http_tls(http: Mapping[str, Any], base: Path) -> HttpTls | None:
    """``[http.tls]``, its files resolved against the config's directory and checked."""
    if "tls" not in http:
        return None
    tls = get(http, "tls", dict, "http.")
    check_unknown(tls, allowed_keys("http.tls"), "http.tls.")
    files: dict[str, Path | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        raw = get(tls, name, str, "http.tls.", None if name == "client_ca_file" else _REQUIRED)
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


def read_raft_tls(raft: Mapping[str, Any], base: Path) -> PeerTLS | None:
    """``[raft.tls]`` (see ``confman.node.peer_tls``), or None for plain TCP."""
    if "tls" not in raft:
        return None
    try:
        return parse_tls_table(get(raft, "tls", dict, "raft."), base)
    except PeerTLSError as exc:
        raise ConfigError(str(exc)) from None


def check_across(values: Mapping[str, Any]) -> None:
    """The rules between settings, on the values read (by NodeConfig attribute)."""
    lo = values["election_timeout_ms"][0]
    if not 1 <= values["tick_ms"] <= lo // 4:
        raise ConfigError("raft.tick_ms: must be between 1 and a quarter of the lower timeout")
    if values["watch_max_per_key"] > values["watch_max_subscribers"]:
        raise ConfigError("watch.max_per_key: must not exceed watch.max_subscribers")


def check_config(cfg: NodeConfig) -> None:
    """The rules that need the whole config."""
    if cfg.http_tls is not None and not cfg.http_advertise.startswith("https://"):
        raise ConfigError(
            "http.advertise: must be an https:// URL when [http.tls] is set "
            f"(got {cfg.http_advertise!r}; use https in this node's [[members]] http too)"
        )


__all__ = [
    "WELL_KNOWN_DEV_KEYS",
    "check_across",
    "check_config",
    "check_unknown",
    "get",
    "hash_key",
    "read_api_keys",
    "read_http_tls",
    "read_members",
    "read_raft_tls",
    "read_secret",
]
