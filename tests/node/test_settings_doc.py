"""docs/config.md is what the settings table generates, and its sample config loads."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from confman.node.config import from_mapping
from confman.node.peer_tls import PeerTLSError, parse_tls_table
from confman.node.settings import SETTINGS, NodeConfig
from confman.node.settings_doc import main, render_markdown, sample_config
from confman.node.settings_nested import NESTED
from confman.node.settings_types import HAND, REQUIRED

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
REGENERATE = ".venv/bin/python -m confman.node.settings_doc --markdown > docs/config.md"


def test_docs_config_md_is_generated_from_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        f"docs/config.md is not what the settings table generates; run: {REGENERATE}"
    )


def test_every_setting_is_in_the_docs() -> None:
    text = render_markdown()
    for s in SETTINGS:
        assert f"| `{s.key}` |" in text
    for keys in NESTED.values():
        for k in keys:
            assert f"| `{k.name}` |" in text


def test_every_config_field_but_extra_is_declared_as_a_setting() -> None:
    declared = {s.attr for s in SETTINGS}
    assert {f.name for f in fields(NodeConfig)} - declared == {"extra"}
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)


def test_the_sample_config_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    raw = tomllib.loads(sample_config())
    cfg = from_mapping(raw, tmp_path)
    assert cfg.node_id == "node1" and len(cfg.members) == 3
    for s in SETTINGS:
        if s.kind is HAND or s.default is REQUIRED or s.example is not None:
            continue
        assert getattr(cfg, s.attr) == s.default, s.key
    # the commented-out derived settings show what they default to for this node
    assert cfg.http_listen == ("127.0.0.1", 6100) and cfg.raft_listen == ("127.0.0.1", 7100)
    assert cfg.watch_max_per_key == 256 and cfg.log_format == "json"


def test_the_raft_tls_keys_documented_are_the_ones_accepted(tmp_path: Path) -> None:
    table = {k.name: k.example for k in NESTED["raft.tls"]}
    with pytest.raises(PeerTLSError) as info:
        parse_tls_table(table, tmp_path)
    assert "unknown setting" not in str(info.value)
    with pytest.raises(PeerTLSError, match="unknown setting"):
        parse_tls_table({**table, "nope": 1}, tmp_path)


def test_the_generator_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()
    assert main([]) == 2
