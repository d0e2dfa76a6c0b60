"""Node configuration: valid files load, every kind of mistake names its field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from confman.node.config import ENV_OVERRIDES, ConfigError, from_mapping, hash_key, load
from confman.node.settings import SECTIONS, SETTINGS
from confman.node.settings_types import BOOL, FLOAT, HAND, INT, POSITIVE, REQUIRED, Setting

SECRET = "s" * 32
ADMIN = hash_key("admin-key")


def _raw() -> dict[str, Any]:
    return {
        "node_id": "n1",
        "data_dir": "data/n1",
        "cluster_secret": SECRET,
        "members": [
            {"id": "n1", "raft": "127.0.0.1:7100", "http": "http://127.0.0.1:6100"},
            {"id": "n2", "raft": "127.0.0.1:7200", "http": "http://127.0.0.1:6200/"},
        ],
        "api_keys": [{"name": "ops", "key_sha256": ADMIN, "roles": ["admin"]}],
    }


def test_minimal_config_with_defaults(tmp_path: Path) -> None:
    cfg = from_mapping(_raw(), tmp_path)
    assert cfg.node_id == "n1" and cfg.data_dir == tmp_path / "data/n1"
    assert cfg.http_listen == ("127.0.0.1", 6100) and cfg.raft_listen == ("127.0.0.1", 7100)
    assert cfg.member.http == "http://127.0.0.1:6100/"
    assert cfg.peer("n2") is not None and cfg.peer("zz") is None
    assert cfg.election_ticks == (15, 30) and cfg.heartbeat_ticks == 7
    assert cfg.replication_timeout_ms == 10_000 and cfg.max_body_bytes == 1 << 20
    assert cfg.api_keys[0].namespaces == ("*",)
    assert cfg.log_format == "json"


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    target: Any = raw
    for p in path[:-1]:
        target = target[p]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["node_id"], KeyError, "node_id: required"),
        (["node_id"], "bad id!", "node_id"),
        (["node_id"], "n9", "members: does not contain this node"),
        (["cluster_secret"], "short", "cluster_secret"),
        (["members", 1, "id"], "n1", "duplicate id 'n1'"),
        (["members", 0, "raft"], "nohostport", "members[0].raft"),
        (["members", 0, "raft"], "h:99999", "members[0].raft"),
        (["members", 0, "http"], "ftp://x", "members[0].http"),
        (["members", 0, "color"], "red", "members[0].color: unknown setting"),
        (["api_keys", 0, "roles"], ["reader"], "unknown role 'reader'"),
        (["api_keys", 0, "roles"], [], "api_keys[0].roles"),
        (["api_keys", 0, "key_sha256"], "abc", "api_keys[0].key_sha256"),
        (["api_keys", 0, "key"], "plain", "only allowed in the dev profile"),
        (["api_keys", 0, "namespaces"], [], "api_keys[0].namespaces"),
        (["profile"], "staging", "profile"),
        (["raft"], {"election_timeout_ms": [300, 150]}, "raft.election_timeout_ms"),
        (["raft"], {"tick_ms": 100}, "raft.tick_ms"),
        (["raft"], {"heartbeat_ratio": 1.5}, "raft.heartbeat_ratio"),
        (["raft"], {"snapshot_interval": 0}, "raft.snapshot_interval"),
        (["raft"], {"snapshot_interval": True}, "raft.snapshot_interval"),
        (["http"], {"max_body_bytes": "big"}, "http.max_body_bytes"),
        (["log"], {"format": "xml"}, "log.format"),
        (["typo_setting"], 1, "typo_setting: unknown setting"),
    ],
)
def test_invalid_configs_name_the_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        from_mapping(_mutate(path, value))


def test_duplicate_keys_rejected() -> None:
    raw = _raw()
    raw["api_keys"].append({"name": "again", "key_sha256": ADMIN, "roles": ["viewer"]})
    with pytest.raises(ConfigError, match="same key"):
        from_mapping(raw)


def test_dev_profile_accepts_plain_keys_and_hashes_them() -> None:
    raw = _mutate(["api_keys", 0], {"name": "dev", "key": "k1", "roles": ["viewer"]})
    raw["profile"] = "dev"
    cfg = from_mapping(raw)
    assert cfg.api_keys[0].key_sha256 == hash_key("k1") and cfg.log_format == "text"


def test_load_file_with_env_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(
        'node_id = "n1"\ndata_dir = "d"\ncluster_secret_file = "secret"\n'
        '[[members]]\nid = "n1"\nraft = "127.0.0.1:7100"\nhttp = "http://127.0.0.1:6100/"\n'
        '[[members]]\nid = "n2"\nraft = "127.0.0.1:7200"\nhttp = "http://127.0.0.1:6200/"\n'
    )
    (tmp_path / "secret").write_text(SECRET + "\n")
    cfg = load(f, env={})
    assert cfg.cluster_secret == SECRET.encode() and cfg.data_dir == tmp_path / "d"
    cfg = load(f, env={"CONFMAN_NODE_ID": "n2", "CONFMAN_CLUSTER_SECRET": "e" * 20})
    assert cfg.node_id == "n2" and cfg.cluster_secret == b"e" * 20
    cfg = load(f, env={}, overrides={"data_dir": "/abs", "node_id": None})
    assert cfg.data_dir == Path("/abs") and cfg.node_id == "n1"
    with pytest.raises(ConfigError, match="invalid TOML"):
        (tmp_path / "bad.toml").write_text("node_id = ")
        load(tmp_path / "bad.toml", env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", env={})
    (tmp_path / "nosecret.toml").write_text(f.read_text().replace('"secret"', '"nofile"'))
    with pytest.raises(ConfigError, match="cluster_secret_file"):
        load(tmp_path / "nosecret.toml", env={})


# -- dev keys and the profile (issue 14, finding 5) ----------------------------------------


def _well_known_dev_keys() -> list[str]:
    try:
        from confman.devconfig import DEV_KEYS
    except ImportError:  # pragma: no cover - before the dev layout moved out of the CLI
        from confman.cli import DEV_KEYS  # type: ignore[attr-defined]
    return [key for key, _, _ in DEV_KEYS]


@pytest.mark.parametrize("dev_key", _well_known_dev_keys())
def test_production_refuses_the_digest_of_a_dev_key(dev_key: str) -> None:
    raw = _mutate(["api_keys", 0, "key_sha256"], hash_key(dev_key))
    with pytest.raises(ConfigError, match=r"api_keys\[0\]\.key_sha256: .*development key"):
        from_mapping(raw)
    raw["api_keys"][0]["key_sha256"] = hash_key(dev_key).upper()  # not hidden by case
    with pytest.raises(ConfigError, match=r"api_keys\[0\]\.key_sha256"):
        from_mapping(raw)


@pytest.mark.parametrize("dev_key", _well_known_dev_keys())
def test_production_refuses_a_dev_key_in_plain_text(dev_key: str) -> None:
    raw = _mutate(["api_keys", 0], {"name": "d", "key": dev_key, "roles": ["admin"]})
    with pytest.raises(ConfigError, match=r"api_keys\[0\]\.key: "):
        from_mapping(raw)


def test_dev_profile_still_accepts_the_dev_keys() -> None:
    raw = _raw()
    raw["profile"] = "dev"
    raw["api_keys"] = [
        {"name": f"k{i}", "key": k, "roles": ["admin"]}
        for i, k in enumerate(_well_known_dev_keys())
    ]
    cfg = from_mapping(raw)
    assert {k.key_sha256 for k in cfg.api_keys} == {hash_key(k) for k in _well_known_dev_keys()}


def _toml(tmp_path: Path, profile: str | None, key_line: str) -> Path:
    f = tmp_path / "node.toml"
    f.write_text(
        'node_id = "n1"\ndata_dir = "d"\n'
        f'cluster_secret = "{SECRET}"\n'
        + (f'profile = "{profile}"\n' if profile else "")
        + '[[members]]\nid = "n1"\nraft = "127.0.0.1:7100"\nhttp = "http://127.0.0.1:6100/"\n'
        f'[[api_keys]]\nname = "k"\n{key_line}\nroles = ["admin"]\n'
    )
    return f


@pytest.mark.parametrize("file_profile", [None, "prod"])
def test_the_environment_cannot_loosen_a_production_file(
    tmp_path: Path, file_profile: str | None
) -> None:
    f = _toml(tmp_path, file_profile, 'key = "plain-text-key"')
    with pytest.raises(ConfigError, match="CONFMAN_PROFILE"):
        load(f, env={"CONFMAN_PROFILE": "dev"})
    f = _toml(tmp_path, file_profile, f'key_sha256 = "{ADMIN}"')
    with pytest.raises(ConfigError, match="CONFMAN_PROFILE"):
        load(f, env={"CONFMAN_PROFILE": "dev"})


def test_the_environment_may_make_a_dev_file_strict(tmp_path: Path) -> None:
    f = _toml(tmp_path, "dev", 'key = "plain-text-key"')
    assert load(f, env={"CONFMAN_PROFILE": "dev"}).profile == "dev"
    with pytest.raises(ConfigError, match=r"api_keys\[0\]\.key: "):
        load(f, env={"CONFMAN_PROFILE": "prod"})
    f = _toml(tmp_path, "dev", f'key_sha256 = "{ADMIN}"')
    assert load(f, env={"CONFMAN_PROFILE": "prod"}).profile == "prod"
    with pytest.raises(ConfigError, match="CONFMAN_PROFILE"):
        load(f, env={"CONFMAN_PROFILE": "staging"})


def test_watch_limits_have_defaults_and_are_settable() -> None:
    cfg = from_mapping(_raw())
    assert (cfg.watch_max_subscribers, cfg.watch_max_per_key, cfg.watch_page_bytes) == (
        1024,
        256,
        1 << 20,
    )
    raw = _raw()
    raw["watch"] = {"max_subscribers": 10, "max_per_key": 2, "page_bytes": 4096}
    cfg = from_mapping(raw)
    assert (cfg.watch_max_subscribers, cfg.watch_max_per_key, cfg.watch_page_bytes) == (
        10,
        2,
        4096,
    )


@pytest.mark.parametrize(
    ("watch", "field"),
    [
        ({"max_subscribers": 0}, "watch.max_subscribers"),
        ({"max_per_key": -1}, "watch.max_per_key"),
        ({"max_per_key": 5, "max_subscribers": 4}, "watch.max_per_key"),
        ({"page_bytes": "1M"}, "watch.page_bytes"),
        ({"page_bytes": 100}, "watch.page_bytes"),
        ({"subscribers": 1}, "watch.subscribers: unknown setting"),
    ],
)
def test_bad_watch_limits_name_the_field(watch: dict[str, Any], field: str) -> None:
    raw = _raw()
    raw["watch"] = watch
    with pytest.raises(ConfigError, match=field):
        from_mapping(raw)


# -- the settings table (issue 15, item 7) -------------------------------------------------


def _set(key: str, value: Any) -> dict[str, Any]:
    raw = _raw()
    section, _, name = key.rpartition(".")
    (raw.setdefault(section, {}) if section else raw)[name] = value
    return raw


_TABLE = [s for s in SETTINGS if s.kind is not HAND]


@pytest.mark.parametrize("s", [s for s in _TABLE if POSITIVE in s.bounds], ids=lambda s: s.key)
def test_every_positive_setting_refuses_zero_naming_the_field(s: Setting) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(s.key)}: must be > 0$"):
        from_mapping(_set(s.key, 0))


@pytest.mark.parametrize(
    "s", [s for s in _TABLE if s.kind in (INT, FLOAT, BOOL)], ids=lambda s: s.key
)
def test_every_number_or_flag_refuses_a_string_naming_the_field(s: Setting) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(s.key)}: expected \w+(/\w+)?, got 'x'$"):
        from_mapping(_set(s.key, "x"))


@pytest.mark.parametrize("s", [s for s in _TABLE if s.kind is INT], ids=lambda s: s.key)
def test_an_integer_setting_refuses_a_boolean(s: Setting) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(s.key)}: expected int, got True$"):
        from_mapping(_set(s.key, True))


@pytest.mark.parametrize("section", ["", *SECTIONS])
def test_an_unknown_key_is_refused_in_every_section(section: str) -> None:
    key = f"{section}.no_such_thing" if section else "no_such_thing"
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: unknown setting$"):
        from_mapping(_set(key, 1))


@pytest.mark.parametrize(
    "s", [s for s in _TABLE if s.default is not REQUIRED and not s.derive], ids=lambda s: s.key
)
def test_each_default_is_the_declared_one_and_each_setting_is_read(s: Setting) -> None:
    assert getattr(from_mapping(_raw()), s.attr) == s.default
    if s.kind is INT and POSITIVE in s.bounds:
        value = s.default + 4096 if isinstance(s.default, int) else 4096
        assert getattr(from_mapping(_set(s.key, value)), s.attr) == value


def test_the_environment_overrides_are_declared_in_the_table() -> None:
    assert ENV_OVERRIDES == {
        "CONFMAN_NODE_ID": "node_id",
        "CONFMAN_DATA_DIR": "data_dir",
        "CONFMAN_CLUSTER_SECRET": "cluster_secret",
    }
    assert {s.env for s in SETTINGS if s.env} == {*ENV_OVERRIDES, "CONFMAN_PROFILE"}


def test_derived_defaults_follow_the_other_settings() -> None:
    raw = _raw()
    raw["watch"] = {"max_subscribers": 10}
    raw["profile"] = "dev"
    cfg = from_mapping(raw)
    assert cfg.watch_max_per_key == 10 and cfg.log_format == "text"
    assert cfg.http_advertise == "http://127.0.0.1:6100/"
    cfg = from_mapping(_set("raft.listen", "0.0.0.0:7100"))
    assert cfg.raft_listen == ("0.0.0.0", 7100)
    with pytest.raises(ConfigError, match=r"^http\.listen: expected 'host:port'"):
        from_mapping(_set("http.listen", "nope"))
