"""The shipped codecs (msgspec) against the msgpack ones they replaced, for commands and
peer messages (issue 16, docs/storage.md §9).

"shipped" is the code the node runs: ``confman.node.state.commands`` (``encode_request`` /
``decode_request``) and ``confman.node.codec`` (``encode_message`` / ``decode_message``):
msgspec's C encoder over the positional arrays, msgspec's typed decoders with the format-1
readers behind them for anything refused. "msgpack" is the reference kept in
``tests/oracles/msgpack_codecs.py``: the old encoders (``msgpack.packb``) and the old decoders
(msgpack, then the per-field checks and the dataclasses' ``__post_init__``). Both decode to
the same dataclasses (``Request``, ``PutConfig``, ``Message``, ``Entry``...), so the figures
include building them.

For each case the table gives the median of ``--repeats`` timings of ``--number`` calls (per
call, in microseconds; the two sides alternate, A/B, so drift on a shared machine hits both),
the encoded size, and checks that the shipped bytes equal the reference's.

    .venv/bin/python -m benchmarks.bench_codec [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack
import msgspec

from confman.node import codec as new_codec
from confman.node.state import commands as cur
from confman.raft.types import Entry, EntryType, Message, MessageType
from tests.oracles import msgpack_codecs as ref

# ------------------------------------------------------------------ the shapes measured
TS_NOW = "2026-12-03T14:00:00.123456Z"


def value(n: int) -> str:
    return ("v" * n)[:n]


def requests() -> dict[str, cur.Request]:
    put = cur.PutConfig("team/payments", "feature.checkout.v2", value(1024), "string")
    return {
        "put 1 KB": cur.Request(put, "Cluster Admin", TS_NOW),
        "put 64 B, CAS, idem": cur.Request(
            cur.PutConfig("team/payments", "limits.max", value(64), "json", 41, must_exist=True),
            "Cluster Admin",
            TS_NOW,
            "0f8e2d6c-1b7a-4a8e-9d3c-5e6f7a8b9c0d",
            3600,
        ),
        "delete": cur.Request(cur.DeleteConfig("team/payments", "old.flag"), "ci-bot", TS_NOW),
        "batch 10 x 1 KB": cur.Request(
            cur.Batch(
                tuple(
                    cur.PutConfig("team/payments", f"key.{i:03d}", value(1024)) for i in range(10)
                )
            ),
            "Cluster Admin",
            TS_NOW,
        ),
    }


def messages() -> dict[str, Message]:
    data = cur.encode_request(requests()["put 1 KB"])
    ents = tuple(Entry(7, 1000 + i, EntryType.NORMAL, data) for i in range(64))
    return {
        "heartbeat": Message(MessageType.HEARTBEAT, "node2", "node1", 7, commit=123456),
        "append resp": Message(MessageType.APPEND_RESP, "node1", "node2", 7, index=123456),
        "append 1 x 1 KB": Message(
            MessageType.APPEND, "node2", "node1", 7, 7, 999, ents[:1], commit=998
        ),
        "append 64 x 1 KB": Message(
            MessageType.APPEND, "node2", "node1", 7, 7, 999, ents, commit=998
        ),
    }


# ------------------------------------------------------------------ timing
def median_pair(
    a: Callable[[], Any], b: Callable[[], Any], number: int, repeats: int
) -> tuple[float, float]:
    """Median us per call of ``a`` and of ``b``, timed alternately ``repeats`` times each."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timeit.timeit(a, number=number))
        tb.append(timeit.timeit(b, number=number))
    return statistics.median(ta) / number * 1e6, statistics.median(tb) / number * 1e6


def scaled(number: int, size: int) -> int:
    """Fewer calls for large payloads, so every case takes a similar time."""
    return max(200, number // max(1, size // 2048))


def rebuild(req: cur.Request) -> cur.Request:
    """What a leader does per write: build the checked dataclasses (the same in both)."""
    cmd = req.command
    if isinstance(cmd, cur.PutConfig):
        cmd = cur.PutConfig(cmd.namespace, cmd.key, cmd.value, cmd.type)
    return cur.Request(cmd, req.actor, TS_NOW)


def build_ref(req: cur.Request) -> bytes:
    return ref.encode_request(rebuild(req))


def build_new(req: cur.Request) -> bytes:
    return cur.encode_request(rebuild(req))


def _row(kind: str, name: str, ref_bytes: bytes, new_bytes: bytes) -> dict[str, Any]:
    if new_bytes != ref_bytes:
        raise AssertionError(f"{kind} {name}: the shipped bytes differ from msgpack's")
    return {"kind": kind, "case": name, "bytes": len(new_bytes)}


def run(number: int, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, req in requests().items():
        data = ref.encode_request(req)
        row = _row("command", name, data, cur.encode_request(req))
        assert cur.decode_request(data) == ref.decode_request(data) == req
        n = scaled(number, len(data))
        row["encode_ref_us"], row["encode_new_us"] = median_pair(
            partial(ref.encode_request, req), partial(cur.encode_request, req), n, repeats
        )
        row["decode_ref_us"], row["decode_new_us"] = median_pair(
            partial(ref.decode_request, data), partial(cur.decode_request, data), n, repeats
        )
        row["build+encode_ref_us"], row["build+encode_new_us"] = median_pair(
            partial(build_ref, req), partial(build_new, req), n, repeats
        )
        rows.append(row)
    for name, msg in messages().items():
        data = ref.encode_message(msg)
        row = _row("message", name, data, new_codec.encode_message(msg))
        assert new_codec.decode_message(data) == ref.decode_message(data) == msg
        n = scaled(number, len(data))
        row["encode_ref_us"], row["encode_new_us"] = median_pair(
            partial(ref.encode_message, msg), partial(new_codec.encode_message, msg), n, repeats
        )
        row["decode_ref_us"], row["decode_new_us"] = median_pair(
            partial(ref.decode_message, data), partial(new_codec.decode_message, data), n, repeats
        )
        rows.append(row)
    return rows


def _outcome(decode: Callable[[bytes], Any], data: bytes) -> str:
    try:
        return "accepts " + repr(decode(data))
    except cur.CommandDecodeError as e:
        return f"rejects: {e}"


def check_rejections() -> list[str]:
    """Malformed inputs: the shipped decoder must answer exactly as the reference (the same
    rejection text, which a rejected log entry records); returns the cases that differ."""
    bad = {
        "empty key": [1, "r", "a", TS_NOW, None, 10, [3, "ns", "", "v", "string", None, False]],
        "negative ttl": [1, "r", "a", TS_NOW, None, -1, [3, "ns", "k", "v", "string", None, False]],
        "month 13": [1, "r", "a", "2026-13-03T14:00:00.123456Z", None, 1, [2, "ns"]],
        "bool as int": [1, "r", "a", TS_NOW, None, 1, [3, "ns", "k", "v", "string", True, False]],
        "nested batch": [1, "r", "a", TS_NOW, None, 1, [5, [[5, []]]]],
        "unknown kind": [1, "r", "a", TS_NOW, None, 1, [9, "x"]],
        "version 2": [2, "r", "a", TS_NOW, None, 1, [2, "ns"]],
    }
    disagree = []
    for name, payload in bad.items():
        data = msgpack.packb(payload)
        want, got = _outcome(ref.decode_request, data), _outcome(cur.decode_request, data)
        if want != got or not want.startswith("rejects"):
            disagree.append(f"{name}: msgpack {want!r}, shipped {got!r}")
    return disagree


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<26}{'bytes':>7} | {'enc ref':>8}{'enc new':>8}{'x':>6} | "
        f"{'dec ref':>8}{'dec new':>8}{'x':>6} | {'bld+enc ref':>11}{'new':>7}{'x':>6}"
    )
    lines = ["median us per call (ref = msgpack, new = shipped msgspec; x = ref / new)", head]
    lines.append("-" * len(head))
    for r in rows:
        ex = r["encode_ref_us"] / r["encode_new_us"]
        dx = r["decode_ref_us"] / r["decode_new_us"]
        bld = ""
        if "build+encode_ref_us" in r:
            bx = r["build+encode_ref_us"] / r["build+encode_new_us"]
            bld = f"{r['build+encode_ref_us']:>11.2f}{r['build+encode_new_us']:>7.2f}{bx:>6.1f}"
        lines.append(
            f"{r['kind'][:3] + ' ' + r['case']:<26}{r['bytes']:>7} | "
            f"{r['encode_ref_us']:>8.2f}{r['encode_new_us']:>8.2f}{ex:>6.1f} | "
            f"{r['decode_ref_us']:>8.2f}{r['decode_new_us']:>8.2f}{dx:>6.1f} | {bld}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, default=20_000, help="calls per timing (small cases)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    disagree = check_rejections()
    rows = run(args.number, args.repeats)
    print(table(rows))
    print(
        "rejections: "
        + ("; ".join(disagree) if disagree else "both reject all 7 bad inputs, with the same text")
    )
    if args.json:
        info = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "msgspec": msgspec.__version__,
            "number": args.number,
            "repeats": args.repeats,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "rows": rows, "rejections": disagree}, f, indent=2)


if __name__ == "__main__":
    main()
