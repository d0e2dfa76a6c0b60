"""msgspec against the current msgpack code for commands and peer messages (issue 16).

"current" is the code the node runs: ``confman.node.state.commands`` (``encode_request`` /
``decode_request``: msgpack.packb of positional lists, then per-field checks in the
dataclasses' ``__post_init__``) and ``confman.node.codec`` (``encode_message`` /
``decode_message``: msgpack with hand-written type checks).

"msgspec" is a sketch of what a port would look like, written here only to measure it:
``array_like`` Structs whose wire form is the same positional arrays (a command's kind is
the Struct's integer tag, i.e. the array's first element), with the checks the current
code makes expressed as types and ``Meta`` constraints, so ``decode`` both parses and
validates. The timestamp keeps its Python check (the regex alone does not reject month 13),
run in ``__post_init__`` as today. Decoding yields Structs, not the current dataclasses:
that is the shape a port would adopt (converting back would cost a Python call per field).

For each case the table gives the median of ``--repeats`` timings of ``--number`` calls
(per call, in microseconds), the encoded size, and whether msgspec's bytes equal the current
ones (``same``) or at least decode with the current decoder (``compat``).

    .venv/bin/python -m benchmarks.bench_codec [--json out.json]

msgspec is not a dependency of Confman: ``.venv/bin/pip install msgspec==0.22.0`` first.
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
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from confman.node import codec as cur_codec
from confman.node.state import commands as cur
from confman.raft.types import Entry, EntryType, Message, MessageType

# ------------------------------------------------------------------ msgspec sketch: commands
NonEmpty = Annotated[str, Meta(min_length=1)]
UInt = Annotated[int, Meta(ge=0)]
TS = Annotated[str, Meta(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")]


class SPutNamespace(Struct, array_like=True, tag=1, tag_field="kind", frozen=True):
    path: NonEmpty
    description: str | None = None
    owner: str | None = None


class SDeleteNamespace(Struct, array_like=True, tag=2, tag_field="kind", frozen=True):
    path: NonEmpty


class SPutConfig(Struct, array_like=True, tag=3, tag_field="kind", frozen=True, omit_defaults=True):
    namespace: NonEmpty
    key: NonEmpty
    value: str
    type: NonEmpty = "string"
    expected_version: UInt | None = None
    create_only: bool = False
    must_exist: bool = False


class SDeleteConfig(
    Struct, array_like=True, tag=4, tag_field="kind", frozen=True, omit_defaults=True
):
    namespace: NonEmpty
    key: NonEmpty
    expected_version: UInt | None = None
    must_exist: bool = False


SSimple = SPutNamespace | SDeleteNamespace | SPutConfig | SDeleteConfig


class SBatch(Struct, array_like=True, tag=5, tag_field="kind", frozen=True):
    commands: list[SSimple]


class SCompactHistory(Struct, array_like=True, tag=6, tag_field="kind", frozen=True):
    through: UInt


SCommand = SSimple | SBatch | SCompactHistory


class SRequest(Struct, array_like=True, frozen=True):
    version: Literal[1]
    kind: Literal["r"]
    actor: NonEmpty
    timestamp: TS
    idempotency_key: Annotated[str, Meta(min_length=1)] | None
    idempotency_ttl_s: UInt
    command: SCommand

    def __post_init__(self) -> None:
        cur.timestamp_micros(self.timestamp)  # month 13 etc.: the regex is not enough


_req_enc = msgspec.msgpack.Encoder()
_req_dec = msgspec.msgpack.Decoder(SRequest)


# ------------------------------------------------------------------ msgspec sketch: messages
class SEntry(Struct, array_like=True, frozen=True):
    term: UInt
    index: UInt
    type: EntryType
    data: bytes


class SConfState(Struct, array_like=True, frozen=True):
    voters: list[str]
    learners: list[str]


class SSnapshot(Struct, array_like=True, frozen=True):
    index: UInt
    term: UInt
    conf_state: SConfState
    data: bytes


class SMessage(Struct, array_like=True, frozen=True):
    type: MessageType
    to: str
    frm: str
    term: UInt
    log_term: UInt
    index: UInt
    entries: list[SEntry]
    commit: UInt
    reject: bool
    reject_hint: UInt
    hint_term: UInt
    snapshot: SSnapshot | None
    context: bytes


_msg_enc = msgspec.msgpack.Encoder()
_msg_dec = msgspec.msgpack.Decoder(tuple[Literal[1], SMessage])


def s_request(req: cur.Request) -> SRequest:
    return msgspec.convert(msgspec.msgpack.decode(cur.encode_request(req)), SRequest, strict=True)


def s_message(m: Message) -> SMessage:
    return _msg_dec.decode(cur_codec.encode_message(m))[1]


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
def median_us(fn: Callable[[], Any], number: int, repeats: int) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeats)
    return statistics.median(times) / number * 1e6


def scaled(number: int, size: int) -> int:
    """Fewer calls for large payloads, so every case takes a similar time."""
    return max(200, number // max(1, size // 2048))


def build_cur(req: cur.Request) -> bytes:
    """What a leader does per write today: build the checked dataclasses, encode them."""
    cmd = req.command
    if isinstance(cmd, cur.PutConfig):
        cmd = cur.PutConfig(cmd.namespace, cmd.key, cmd.value, cmd.type)
    return cur.encode_request(cur.Request(cmd, req.actor, TS_NOW))


def build_s(req: SRequest) -> bytes:
    """The same with the msgspec sketch (constraints are checked on decode, not here)."""
    cmd = req.command
    if isinstance(cmd, SPutConfig):
        cmd = SPutConfig(cmd.namespace, cmd.key, cmd.value, cmd.type)
    return _req_enc.encode(
        SRequest(1, "r", req.actor, TS_NOW, None, cur.DEFAULT_IDEMPOTENCY_TTL_S, cmd)
    )


def run(number: int, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, req in requests().items():
        cur_bytes = cur.encode_request(req)
        s_req = s_request(req)
        s_bytes = _req_enc.encode(s_req)
        n = scaled(number, len(cur_bytes))
        cur.decode_request(s_bytes)  # msgspec's bytes must decode with today's decoder
        assert _req_dec.decode(cur_bytes) == s_req
        rows.append(
            {
                "kind": "command",
                "case": name,
                "bytes_current": len(cur_bytes),
                "bytes_msgspec": len(s_bytes),
                "wire": "same" if s_bytes == cur_bytes else "compat",
                "encode_current_us": median_us(partial(cur.encode_request, req), n, repeats),
                "encode_msgspec_us": median_us(partial(_req_enc.encode, s_req), n, repeats),
                "decode_current_us": median_us(partial(cur.decode_request, cur_bytes), n, repeats),
                "decode_msgspec_us": median_us(partial(_req_dec.decode, cur_bytes), n, repeats),
                # what a leader does per write today: build the checked dataclass, encode it
                "build+encode_current_us": median_us(partial(build_cur, req), n, repeats),
                "build+encode_msgspec_us": median_us(partial(build_s, s_req), n, repeats),
            }
        )
    for name, msg in messages().items():
        cur_bytes = cur_codec.encode_message(msg)
        s_msg = s_message(msg)
        s_bytes = _msg_enc.encode((1, s_msg))
        n = scaled(number, len(cur_bytes))
        assert cur_codec.decode_message(s_bytes) == msg
        rows.append(
            {
                "kind": "message",
                "case": name,
                "bytes_current": len(cur_bytes),
                "bytes_msgspec": len(s_bytes),
                "wire": "same" if s_bytes == cur_bytes else "compat",
                "encode_current_us": median_us(partial(cur_codec.encode_message, msg), n, repeats),
                "encode_msgspec_us": median_us(partial(_msg_enc.encode, (1, s_msg)), n, repeats),
                "decode_current_us": median_us(
                    partial(cur_codec.decode_message, cur_bytes), n, repeats
                ),
                "decode_msgspec_us": median_us(partial(_msg_dec.decode, cur_bytes), n, repeats),
            }
        )
    return rows


def check_rejections() -> list[str]:
    """Inputs the current decoders reject must be rejected by the sketch too (a sanity check
    that the comparison is like for like); returns the cases where they disagree."""
    import msgpack

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
        try:
            cur.decode_request(data)
            cur_ok = True
        except cur.CommandDecodeError:
            cur_ok = False
        try:
            _req_dec.decode(data)
            s_ok = True
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            s_ok = False
        if cur_ok != s_ok:
            disagree.append(
                f"{name}: current {'accepts' if cur_ok else 'rejects'}, msgspec "
                f"{'accepts' if s_ok else 'rejects'}"
            )
    return disagree


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<26}{'bytes':>7}{'wire':>7} | {'enc cur':>8}{'enc ms':>8}{'x':>6} | "
        f"{'dec cur':>8}{'dec ms':>8}{'x':>6} | {'bld+enc cur':>11}{'ms':>7}{'x':>6}"
    )
    lines = ["median us per call (x = current / msgspec)", head, "-" * len(head)]
    for r in rows:
        ex = r["encode_current_us"] / r["encode_msgspec_us"]
        dx = r["decode_current_us"] / r["decode_msgspec_us"]
        bld = ""
        if "build+encode_current_us" in r:
            bx = r["build+encode_current_us"] / r["build+encode_msgspec_us"]
            bld = (
                f"{r['build+encode_current_us']:>11.2f}{r['build+encode_msgspec_us']:>7.2f}"
                f"{bx:>6.1f}"
            )
        size = f"{r['bytes_current']}" + (
            "" if r["bytes_msgspec"] == r["bytes_current"] else f"/{r['bytes_msgspec']}"
        )
        lines.append(
            f"{r['kind'][:3] + ' ' + r['case']:<26}{size:>7}{r['wire']:>7} | "
            f"{r['encode_current_us']:>8.2f}{r['encode_msgspec_us']:>8.2f}{ex:>6.1f} | "
            f"{r['decode_current_us']:>8.2f}{r['decode_msgspec_us']:>8.2f}{dx:>6.1f} | {bld}"
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
    print("rejections: " + ("; ".join(disagree) if disagree else "both reject all 7 bad inputs"))
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
