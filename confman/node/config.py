"""Node configuration: a TOML file per node, overridable by environment variables and flags.

Every setting is declared once, in ``confman.node.settings`` (the ``NodeConfig`` fields);
``docs/config.md`` lists them all and holds a sample file. This module reads a file: the
settings table drives the type and bounds checks and their messages, and
``confman.node.config_checks`` reads the nested tables and applies the rules across fields.
Every mistake is reported at start-up as a ``ConfigError`` naming the offending field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confman.node.config_checks import (
    WELL_KNOWN_DEV_KEYS,
    check_across,
    check_config,
    check_unknown,
    get,
    hash_key,
    read_api_keys,
    read_http_tls,
    read_members,
    read_raft_tls,
    read_secret,
)
from confman.node.settings import SECTIONS, SETTINGS, NodeConfig
from confman.node.settings_nested import allowed_keys
from confman.node.settings_types import (
    HAND,
    REQUIRED,
    ROLES,
    ApiKey,
    ConfigError,
    HttpTls,
    Member,
    Setting,
    parse_address,
)

#: Environment variables that replace a top-level setting (``CONFMAN_PROFILE`` apart: it
#: may only make the profile stricter).
ENV_OVERRIDES = {s.env: s.key for s in SETTINGS if s.env and s.key != "profile"}


def _read(s: Setting, value: object, base: Path) -> object:
    out = s.kind.parse(s.key, value, base)
    for bound in s.bounds:
        if not bound.ok(out):
            raise ConfigError(f"{s.key}: " + bound.message.replace("{value!r}", repr(out)))
    return out


def from_mapping(raw: Mapping[str, Any], base_dir: Path | None = None) -> NodeConfig:
    """Build and validate a config from parsed TOML (or an equivalent mapping)."""
    base = base_dir or Path.cwd()
    check_unknown(raw, allowed_keys(""), "")
    tables: dict[str, Mapping[str, Any]] = {"": raw}
    for section in SECTIONS:
        tables[section] = get(raw, section, dict, "", {})
        check_unknown(tables[section], allowed_keys(section), f"{section}.")

    values: dict[str, Any] = {}
    derived: list[Setting] = []
    for s in SETTINGS:
        table = tables[s.section]
        if s.kind is HAND:
            continue
        if s.name in table:
            values[s.attr] = _read(s, table[s.name], base)
        elif s.derive is not None:
            derived.append(s)
        elif s.default is REQUIRED:
            raise ConfigError(f"{s.key}: required")
        else:
            values[s.attr] = s.default

    members, me = read_members(raw, values["node_id"])
    for s in derived:
        values[s.attr] = _read(s, s.derive(values, me) if s.derive else None, base)
    check_across(values)
    cfg = NodeConfig(
        **values,
        members=members,
        cluster_secret=read_secret(raw, base),
        api_keys=read_api_keys(raw, values["profile"]),
        http_tls=read_http_tls(tables["http"], base),
        raft_tls=read_raft_tls(tables["raft"], base),
    )
    check_config(cfg)
    return cfg


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
    "ENV_OVERRIDES",
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
