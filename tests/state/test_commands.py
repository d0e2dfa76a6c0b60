"""The command encoding: round trips, versioning, refusal of garbage and bad fields."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest

from confman.node.state.commands import (
    FORMAT_VERSION,
    Batch,
    CommandDecodeError,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    Request,
    decode_command,
    decode_request,
    encode_command,
    encode_request,
    format_timestamp,
    request_fingerprint,
    timestamp_micros,
)

TS = "2026-02-13T10:00:00.123456Z"

COMMANDS = [
    PutNamespace("team", "the team", "ops"),
    PutNamespace("team/app", None, None),
    DeleteNamespace("team"),
    PutConfig("team", "db.url", "postgres://x"),
    PutConfig("team", "n", "3", "number", expected_version=4),
    PutConfig("team", "empty", "", create_only=True),
    DeleteConfig("team", "db.url"),
    DeleteConfig("team", "db.url", expected_version=2),
    PutConfig("team", "n", "4", must_exist=True),
    DeleteConfig("team", "n", must_exist=True),
    CompactHistory(120),
    Batch((PutConfig("team", "a", "1"), DeleteConfig("team", "b"), DeleteNamespace("x"))),
    Batch(()),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_commands_round_trip_bare_and_in_a_request(command: object) -> None:
    assert decode_command(encode_command(command)) == command  # type: ignore[arg-type]
    req = Request(command, "alice", TS, "idem-1", 60)  # type: ignore[arg-type]
    assert decode_request(encode_request(req)) == req


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_payload_starts_with_format_version_1(command: object) -> None:
    req = Request(command, "alice", TS)  # type: ignore[arg-type]
    assert msgpack.unpackb(encode_request(req))[0] == FORMAT_VERSION == 1
    assert msgpack.unpackb(encode_command(command))[0] == 1  # type: ignore[arg-type]


def test_request_defaults() -> None:
    req = decode_request(encode_request(Request(PutNamespace("a"), "bob", TS)))
    assert req.idempotency_key is None
    assert req.idempotency_ttl_s == 24 * 3600
    assert req.actor == "bob"


def test_batch_accepts_a_list_and_stores_a_tuple() -> None:
    batch = Batch([PutNamespace("a")])  # type: ignore[arg-type]
    assert batch.commands == (PutNamespace("a"),)
    assert hash(batch) == hash(Batch((PutNamespace("a"),)))


def _payload(*items: object) -> bytes:
    return msgpack.packb(list(items))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        (b"\x93\x01", "not msgpack"),  # truncated array
        (msgpack.packb({"v": 1}), "not a versioned array"),
        (msgpack.packb([]), "not a versioned array"),
        (_payload(2, "r", "a", TS, None, 0, [2, "x"]), "unknown command format version 2"),
        (_payload(0, "r", "a", TS, None, 0, [2, "x"]), "unknown command format version 0"),
        (_payload("1", "r", "a", TS, None, 0, [2, "x"]), "unknown command format version"),
        (_payload(True, "r", "a", TS, None, 0, [2, "x"]), "unknown command format version"),
        (_payload(1, "x", "a", TS, None, 0, [2, "x"]), "neither a request nor a command"),
        (_payload(1, "r", "a", TS, None, 0, [9, "x"]), "unknown command kind 9"),
        (_payload(1, "r", "a", TS, None, 0, [2, "x", "y"]), "unknown command kind 2"),
        (_payload(1, "r", "a", TS, None, 0, "cmd"), "not a non-empty array"),
        (_payload(1, "r", "a", TS, None, 0, [2, 7]), "path must be a string"),
        (_payload(1, "r", "a", TS, None, 0, [2, ""]), "path must not be empty"),
        (_payload(1, "r", "", TS, None, 0, [2, "x"]), "actor must not be empty"),
        (_payload(1, "r", "a", "yesterday", None, 0, [2, "x"]), "timestamp must look like"),
        (_payload(1, "r", "a", "2026-13-01T00:00:00.000000Z", None, 0, [2, "x"]), "month"),
        (_payload(1, "r", "a", TS, None, -1, [2, "x"]), "idempotency_ttl_s must be >= 0"),
        (_payload(1, "r", "a", TS, 5, 0, [2, "x"]), "idempotency_key must be a string"),
        (_payload(1, "r", "a", TS, None, 0, [3, "n", "k", 5, "string", None, False]), "value"),
        (
            _payload(1, "r", "a", TS, None, 0, [3, "n", "k", "v", "string", True, False]),
            "expected_version must be an integer",
        ),
        (
            _payload(1, "r", "a", TS, None, 0, [3, "n", "k", "v", "string", None, 1]),
            "create_only must be a bool",
        ),
        (_payload(1, "r", "a", TS, None, 0, [5, [[5, []]]]), "unknown command kind 5"),
        (_payload(1, "r", "a", TS, None, 0, [5, "x"]), "unknown command kind 5"),
        (_payload(1, "r", "a", TS, None, 0, [4, "n", "k", None, 1]), "must_exist must be a bool"),
        (_payload(1, "r", "a", TS, None, 0, [6, -1]), "through must be >= 0"),
        (_payload(1, "r", "a", TS, None, 0, [5, [[6, 3]]]), "unknown command kind 6"),
    ],
)
def test_garbage_and_bad_fields_raise_command_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(CommandDecodeError, match=message):
        decode_request(data)


def test_extra_bytes_after_the_payload_are_refused() -> None:
    data = encode_request(Request(PutNamespace("a"), "bob", TS))
    with pytest.raises(CommandDecodeError):
        decode_request(data + b"\x00")


def test_request_and_bare_command_are_not_confused() -> None:
    with pytest.raises(CommandDecodeError, match="bare command"):
        decode_request(encode_command(PutNamespace("a")))
    with pytest.raises(CommandDecodeError, match="request"):
        decode_command(encode_request(Request(PutNamespace("a"), "bob", TS)))


@pytest.mark.parametrize(
    "build",
    [
        lambda: PutConfig("ns", "k", None),  # type: ignore[arg-type]
        lambda: PutConfig("ns", "", "v"),
        lambda: PutConfig("ns", "k", "v", expected_version=-1),
        lambda: DeleteConfig("ns", "k", expected_version="3"),  # type: ignore[arg-type]
        lambda: PutNamespace("ns", description=3),  # type: ignore[arg-type]
        lambda: Batch((Batch(()),)),  # type: ignore[arg-type]
        lambda: Batch((CompactHistory(3),)),  # type: ignore[arg-type]
        lambda: CompactHistory("3"),  # type: ignore[arg-type]
        lambda: Request("not a command", "a", TS),  # type: ignore[arg-type]
        lambda: Request(PutNamespace("a"), "a", "2026-02-13T10:00:00Z"),
        lambda: Request(PutNamespace("a"), "a", "2026-02-13T10:00:00.123456+00:00"),
    ],
)
def test_construction_validates_so_a_leader_cannot_propose_garbage(build: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        build()  # type: ignore[operator]


def test_timestamps_format_and_parse_in_utc() -> None:
    moment = datetime(2026, 2, 13, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == TS
    assert (
        timestamp_micros(TS)
        == int((datetime(2026, 2, 13, 10, 0, 0, tzinfo=UTC).timestamp()) * 1_000_000) + 123456
    )
    assert timestamp_micros("1970-01-01T00:00:00.000001Z") == 1


def test_format_1_layout_is_pinned() -> None:
    """Entries already in logs must keep decoding: format 1 is exactly this layout."""
    cmd = PutConfig("ns", "k", "v", "json", 3, False)
    req = Request(cmd, "alice", TS, "idem", 60)
    body = [3, "ns", "k", "v", "json", 3, False]
    assert encode_request(req) == msgpack.packb([1, "r", "alice", TS, "idem", 60, body])
    assert encode_command(Batch((cmd,))) == msgpack.packb([1, "c", [5, [body]]])
    bare = {
        PutNamespace("p", "d", "o"): [1, "p", "d", "o"],
        DeleteNamespace("p"): [2, "p"],
        DeleteConfig("p", "k", None): [4, "p", "k", None],
        # added later: trailing must_exist only when set, compaction as kind 6
        PutConfig("p", "k", "v", must_exist=True): [3, "p", "k", "v", "string", None, False, True],
        DeleteConfig("p", "k", 2, must_exist=True): [4, "p", "k", 2, True],
        CompactHistory(9): [6, 9],
    }
    for command, layout in bare.items():
        assert encode_command(command) == msgpack.packb([1, "c", layout])


def test_fingerprint_ignores_time_and_key_but_not_actor_or_command() -> None:
    cmd = PutConfig("ns", "k", "v")
    base = request_fingerprint(Request(cmd, "alice", TS, "a", 60))
    assert request_fingerprint(Request(cmd, "alice", "2030-01-01T00:00:00.000000Z", "b")) == base
    assert request_fingerprint(Request(cmd, "bob", TS, "a", 60)) != base
    assert request_fingerprint(Request(PutConfig("ns", "k", "w"), "alice", TS, "a")) != base
    assert (
        base
        == hashlib.sha256(
            msgpack.packb(["alice", [3, "ns", "k", "v", "string", None, False]])
        ).digest()
    )
