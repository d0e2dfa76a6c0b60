"""Opening a schema-1 database (tests/state/fixtures/format1.db, written by the format-1
code) migrates it to schema 2 in place: the rendered API state and the answers to
idempotent retries are those the format-1 code gave (fixtures/format1.json)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from confman.node.state.commands import CompactHistory, PutConfig
from confman.node.state.machine import StateMachine
from confman.node.state.schema import SCHEMA_VERSION, TABLE_ORDER, SchemaError
from confman.raft.types import Entry, EntryType
from tests.state.logbuilder import Log, audit_rows
from tests.state.rendered import rendered_state, result_json

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "format1.json").read_text())
    return data


def v1_copy(tmp_path: Path, name: str = "state.db") -> Path:
    db = tmp_path / name
    shutil.copyfile(FIXTURES / "format1.db", db)
    return db


def schema_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        version: int = conn.execute("SELECT schema_version FROM meta").fetchone()[0]
        return version
    finally:
        conn.close()


def test_the_fixture_is_a_schema_1_database() -> None:
    assert schema_version(FIXTURES / "format1.db") == 1


def test_migration_keeps_the_rendered_state(tmp_path: Path, fixture: dict[str, Any]) -> None:
    db = v1_copy(tmp_path)
    with StateMachine(db) as machine:
        assert machine.applied_index == fixture["state"]["applied"]
        assert machine.applied_term == 3
    assert schema_version(db) == SCHEMA_VERSION
    assert rendered_state(db, fixture["namespaces"]) == fixture["state"]


def test_migrated_database_answers_retries_as_format_1_did(
    tmp_path: Path, fixture: dict[str, Any]
) -> None:
    db = v1_copy(tmp_path)
    with StateMachine(db) as machine:
        first = machine.applied_index + 1
        entries = [
            Entry(fixture["retry_term"], first + n, EntryType.NORMAL, bytes.fromhex(data))
            for n, data in enumerate(fixture["retry_entries"])
        ]
        results = machine.apply(entries)
    assert [result_json(r) for r in results] == fixture["retry_results"]


def test_migration_is_deterministic_and_the_database_goes_on(tmp_path: Path) -> None:
    digests = []
    for name in ("a.db", "b.db"):
        with StateMachine(v1_copy(tmp_path, name)) as machine:
            digests.append(machine.state_digest())
            tables = {r[0] for r in machine.conn.execute("SELECT name FROM sqlite_master")}
            assert set(TABLE_ORDER) <= tables and not {"audit", "audit_v1"} & tables
            assert machine.conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
            log = Log(term=3)
            log.entries = [Entry(3, i, EntryType.NORMAL, b"") for i in range(1, 30)]
            log.add(PutConfig("app", "hot", "v7"))
            log.add(CompactHistory(28))  # all migrated history but entry 29's goes
            log.add(PutConfig("app", "hot", "v8"))
            results = machine.apply(log.entries[29:])
            assert [r.status.value for r in results] == ["updated", "compacted", "updated"]
            rows = audit_rows(machine)
            assert [(r[3], r[6], r[7], r[8], r[9]) for r in rows] == [
                ("config.created", "empty", None, "", 1),
                ("config.updated", "hot", "v6", "v7", 8),
                ("config.updated", "hot", "v7", "v8", 9),
            ]
            # the old values of "hot" went with their events; its current one stays
            hot = machine.conn.execute(
                "SELECT v.version FROM versions v JOIN entries e USING (key_id)"
                " WHERE e.key = 'hot' ORDER BY v.vid"
            ).fetchall()
            assert hot == [(7,), (8,), (9,)]
    assert digests[0] == digests[1]


def test_a_database_that_is_not_schema_1_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = v1_copy(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE audit DROP COLUMN version")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="cannot migrate the state database from schema 1"):
        StateMachine(db)
    assert schema_version(db) == 1
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] > 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "versions" not in tables and "entries" in tables
    finally:
        conn.close()
