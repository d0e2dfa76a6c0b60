"""Operations, the recorder used by concurrent clients, and JSON-lines files."""

from __future__ import annotations

import asyncio
import io
import pickle
import random
from pathlib import Path

import pytest

from confman.verify.checker import check
from confman.verify.history import (
    UNKNOWN,
    HistoryRecorder,
    Operation,
    freeze,
    read_jsonl,
    write_jsonl,
)
from confman.verify.models import RegisterModel, VersionedMapModel


class TickClock:
    """A deterministic clock: every reading is one tick later."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_operation_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        Operation(1, "read", None, None, 0, 1, "done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before its call"):
        Operation(1, "read", None, None, 5, 4)


def test_indeterminate() -> None:
    assert not Operation(1, "read", None, 3, 0, 1).indeterminate
    assert Operation(1, "write", 3, None, 0, None, "ok").indeterminate
    info = Operation(1, "write", 3, None, 0, 7, "info")
    assert info.indeterminate
    assert info.effective_ret == float("inf")
    assert Operation(1, "write", 3, None, 0, 7, "fail").effective_ret == 7


def test_unknown_is_a_singleton_that_survives_pickling() -> None:
    assert repr(UNKNOWN) == "UNKNOWN"
    assert pickle.loads(pickle.dumps(UNKNOWN)) is UNKNOWN
    assert type(UNKNOWN)() is UNKNOWN


def test_freeze() -> None:
    assert freeze([1, [2, {"b": [3], "a": None}]]) == (1, (2, (("a", None), ("b", (3,)))))
    assert freeze("x") == "x"


def test_jsonl_round_trip(tmp_path: Path) -> None:
    history = [
        Operation(1, "write", ("k", "v"), 1, 0.5, 1.25),
        Operation("c2", "read", ("k",), ("v", 1), 1.0, 2.0),
        Operation(3, "cas", ("k", 1, "w"), None, 2.0, None, "info"),
        Operation(4, "delete", ("k",), None, 3.0, 4.0, "fail"),
    ]
    path = tmp_path / "h.jsonl"
    write_jsonl(history, path)
    assert read_jsonl(path) == history
    buffer = io.StringIO()
    write_jsonl(history, buffer)
    assert len(buffer.getvalue().splitlines()) == 4
    assert read_jsonl(io.StringIO(buffer.getvalue() + "\n\n")) == history


def test_jsonl_errors_name_the_line() -> None:
    good = '{"client_id":1,"kind":"read","input":null,"output":null,"call":0,"ret":1}\n'
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(io.StringIO(good + '{"kind":"read"}\n'))
    with pytest.raises(ValueError, match="line 1"):
        read_jsonl(io.StringIO("not json\n"))


def test_recorder_sync() -> None:
    rec = HistoryRecorder(clock=TickClock())
    a = rec.invoke(1, "write", 5)
    b = rec.invoke(2, "read")
    c = rec.invoke(3, "write", [6, 7])
    d = rec.invoke(4, "write", 8)
    rec.ok(b, 5)
    rec.ok(a)
    rec.fail(d)
    assert rec.info(c).ret is None
    e = rec.invoke(5, "read")
    assert rec.history() == [
        Operation(1, "write", 5, None, 1, 6, "ok"),
        Operation(2, "read", None, 5, 2, 5, "ok"),
        Operation(3, "write", (6, 7), None, 3, None, "info"),
        Operation(4, "write", 8, None, 4, 7, "fail"),
        Operation(5, "read", None, None, 9, None, "info"),  # still pending
    ]
    with pytest.raises(KeyError):
        rec.ok(a)
    rec.ok(e, 5)
    assert rec.history()[-1].status == "ok"


def test_recorder_operation_block() -> None:
    rec = HistoryRecorder(clock=TickClock())
    with rec.operation(1, "write", 1) as op:
        op.ok()
    with rec.operation(2, "write", 2) as op:
        op.fail()
    with rec.operation(3, "write", 3):
        pass  # neither: outcome unknown
    with pytest.raises(TimeoutError), rec.operation(4, "read") as op:
        raise TimeoutError
    with rec.operation(5, "read") as op:
        op.ok([1, 2])
        with pytest.raises(RuntimeError, match="already completed"):
            op.fail()
    assert [(o.status, o.output, o.ret) for o in rec.history()] == [
        ("ok", None, 2),
        ("fail", None, 4),
        ("info", None, None),
        ("info", None, None),
        ("ok", (1, 2), 10),
    ]


class VersionedStore:
    """An in-memory store with Confman's semantics that yields to the loop mid-operation."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.data: dict[str, tuple[str, int]] = {}

    async def pause(self) -> None:
        for _ in range(self.rng.randrange(3)):
            await asyncio.sleep(0)

    async def write(self, key: str, value: str) -> int:
        await self.pause()
        version = self.data.get(key, ("", 0))[1] + 1
        self.data[key] = (value, version)
        await self.pause()
        return version

    async def read(self, key: str) -> tuple[str, int] | None:
        await self.pause()
        found = self.data.get(key)
        await self.pause()
        return found


class LaggingStore(VersionedStore):
    """A broken replica: reads see the data as it was one write ago."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.previous: dict[str, tuple[str, int]] = {}

    async def write(self, key: str, value: str) -> int:
        self.previous = dict(self.data)
        return await super().write(key, value)

    async def read(self, key: str) -> tuple[str, int] | None:
        await self.pause()
        return self.previous.get(key)


async def client(rec: HistoryRecorder, store: VersionedStore, cid: int, rng: random.Random):
    for n in range(15):
        key = rng.choice("ab")
        if rng.random() < 0.5:
            h = rec.invoke(cid, "write", (key, f"{cid}.{n}"))
            version = await store.write(key, f"{cid}.{n}")
            if rng.random() < 0.1:
                rec.info(h)  # the client gave up waiting; the write happened anyway
            else:
                rec.ok(h, version)
        else:
            with rec.operation(cid, "read", (key,)) as op:
                op.ok(await store.read(key))


def record(store: VersionedStore, rng: random.Random) -> list[Operation]:
    rec = HistoryRecorder(clock=TickClock())

    async def main() -> None:
        await asyncio.gather(*(client(rec, store, cid, rng) for cid in range(5)))

    asyncio.run(main())
    return rec.history()


@pytest.mark.parametrize("seed", range(3))
def test_recorder_with_asyncio_clients_gives_a_linearizable_history(seed: int) -> None:
    rng = random.Random(seed)
    history = record(VersionedStore(rng), rng)
    assert len(history) == 75
    assert any(op.indeterminate for op in history)
    result = check(history, VersionedMapModel(), timeout=10.0)
    assert result.verdict == "linearizable", result.details


@pytest.mark.parametrize("seed", range(3))
def test_stale_reads_of_a_lagging_store_are_caught(seed: int) -> None:
    rng = random.Random(seed)
    result = check(record(LaggingStore(rng), rng), VersionedMapModel(), timeout=10.0)
    assert result.verdict == "not_linearizable"


def test_recorded_lost_update_is_caught() -> None:
    rec = HistoryRecorder(clock=TickClock())
    w = rec.invoke(1, "write", 1)
    rec.ok(w)
    r = rec.invoke(2, "read")
    rec.ok(r, None)
    assert check(rec.history(), RegisterModel()).verdict == "not_linearizable"
