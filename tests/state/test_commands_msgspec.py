"""The msgspec command codec against the msgpack one it replaced (``tests/oracles``).

- ``encode_request``, ``encode_command`` and ``request_fingerprint`` give the old bytes and
  hashes (log entries, and idempotency keys stored before the upgrade, must keep matching).
- The msgspec decoders accept every encoding and build the same commands, of the same types,
  as the format-1 reader; on mutated payloads (a field replaced, dropped, added or retyped)
  they never accept what the reader refuses, and ``decode_request`` / ``decode_command`` give
  the reader's value or the reader's error text (which a rejected entry stores in the
  replicated state, so every release must write the same).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from confman.node.state import commands
from confman.node.state.commands import (
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
)
from tests.oracles import msgpack_codecs as old
from tests.storage.test_codec import msgpack_values
from tests.storage.test_codec_msgspec import near_values, paths

u64 = st.sampled_from([0, 1, 127, 128, 2**16, 2**32, 2**64 - 1]) | st.integers(0, 2**64 - 1)
texts = st.text(max_size=12) | st.sampled_from([0, 31, 32, 255, 256, 65536]).map(lambda n: "é" * n)
names = texts.filter(bool)
optional = st.none() | texts
simple = st.one_of(
    st.builds(PutNamespace, names, optional, optional),
    st.builds(DeleteNamespace, names),
    st.builds(PutConfig, names, names, texts, names, st.none() | u64, st.booleans(), st.booleans()),
    st.builds(DeleteConfig, names, names, st.none() | u64, st.booleans()),
)
any_command = (
    simple
    | st.builds(CompactHistory, u64)
    | st.lists(simple, max_size=4).map(lambda cs: Batch(tuple(cs)))
)
timestamps = st.datetimes(timezones=st.just(UTC)).map(format_timestamp)
requests = st.builds(Request, any_command, names, timestamps, st.none() | names, u64)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(requests)
def test_encoders_and_fingerprint_give_the_msgpack_bytes(req: Request) -> None:
    assert encode_request(req) == old.encode_request(req)
    assert encode_command(req.command) == old.encode_command(req.command)
    assert request_fingerprint(req) == old.request_fingerprint(req)


def _outcome(decode: Any, data: bytes) -> tuple[str, str]:
    """The repr of what ``decode`` makes of ``data`` (a repr tells True from 1, which ``==``
    does not) or the CommandDecodeError's text."""
    try:
        return ("value", repr(decode(data)))
    except CommandDecodeError as e:
        return ("error", str(e))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(requests)
def test_the_fast_path_decodes_every_request_and_command(req: Request) -> None:
    data, bare = old.encode_request(req), old.encode_command(req.command)
    fast = commands._REQUEST_DECODER.decode(data).build()  # not the fallback
    fast_bare = commands._COMMAND_DECODER.decode(bare).command.build()
    assert fast == req and repr(fast) == repr(req) == repr(old.decode_request(data))
    assert fast_bare == req.command and repr(fast_bare) == repr(old.decode_command(bare))
    assert type(fast.command) is type(req.command)
    if isinstance(fast.command, Batch):
        assert type(fast.command.commands) is tuple
        assert [type(c) for c in fast.command.commands] == [type(c) for c in req.command.commands]  # type: ignore[union-attr]
    assert hash(fast) == hash(req)


@st.composite
def mutated(draw: st.DrawFn, bare: bool) -> bytes:
    """A format-1 payload with one part replaced, dropped, extended or wrapped."""
    data = old.encode_command(draw(any_command)) if bare else old.encode_request(draw(requests))
    payload = msgpack.unpackb(data)
    path = draw(st.sampled_from(paths(payload)))
    how = draw(st.sampled_from(["replace", "near", "drop", "append", "wrap", "timestamp"]))
    if not path:
        return bytes(msgpack.packb(draw(msgpack_values) if how == "replace" else [payload]))
    parent = payload
    for i in path[:-1]:
        parent = parent[i]
    i = path[-1]
    if how == "replace":
        parent[i] = draw(msgpack_values)
    elif how == "near":
        parent[i] = draw(near_values | st.sampled_from(["r", "c", 1.5]))
    elif how == "drop":
        del parent[i]
    elif how == "append":
        parent.insert(i + 1, draw(near_values))
    elif how == "wrap":
        parent[i] = [parent[i]]
    else:  # a string that is almost a timestamp
        parent[i] = draw(
            st.sampled_from(
                [
                    "2026-13-01T00:00:00.000000Z",
                    "2026-02-30T00:00:00.000000Z",
                    "2026-02-13T10:00:00.123456Z\n",
                    "2026-02-13T10:00:00Z",
                    "\uff12\uff10\uff12\uff16-02-13T10:00:00.123456Z",  # full-width digits
                    "2026-02-13T24:00:00.000000Z",
                ]
            )
        )
    return bytes(msgpack.packb(payload))


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(mutated(bare=False))
def test_mutated_requests_decode_as_the_reader_decides(data: bytes) -> None:
    reference = _outcome(old.decode_request, data)
    try:
        wire = commands._REQUEST_DECODER.decode(data)
        commands._parse_timestamp(wire.timestamp)
    except commands._FAST_REFUSALS:
        pass
    else:  # what the fast path accepts, the reader accepts as the same request
        assert ("value", repr(wire.build())) == reference
    assert _outcome(decode_request, data) == reference


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(mutated(bare=True))
def test_mutated_commands_decode_as_the_reader_decides(data: bytes) -> None:
    reference = _outcome(old.decode_command, data)
    try:
        wire = commands._COMMAND_DECODER.decode(data)
    except commands._FAST_REFUSALS:
        pass
    else:
        assert ("value", repr(wire.command.build())) == reference
    assert _outcome(decode_command, data) == reference


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64) | mutated(bare=False).map(lambda b: b[:-1]))
def test_garbage_decodes_as_the_reader_decides(data: bytes) -> None:
    assert _outcome(decode_request, data) == _outcome(old.decode_request, data)
    assert _outcome(decode_command, data) == _outcome(old.decode_command, data)


def test_what_the_reader_accepts_beyond_the_types_is_still_accepted() -> None:
    """The format-1 reader compares a command's kind with ``==``, so True (== 1) and 3.0
    (== 3) pass as kinds; the msgspec types refuse them, and the reader still decides."""
    ts = "2026-02-13T10:00:00.123456Z"
    cases: list[tuple[object, list[object], PutNamespace | PutConfig]] = [
        (True, ["p", None, None], PutNamespace("p")),
        (3.0, ["n", "k", "v", "string", None, False], PutConfig("n", "k", "v")),
    ]
    for kind, fields, expected in cases:
        data = msgpack.packb([1, "r", "a", ts, None, 0, [kind, *fields]])
        assert decode_request(data) == Request(expected, "a", ts, None, 0)
        assert _outcome(decode_request, data) == _outcome(old.decode_request, data)


def test_subclasses_of_str_and_int_encode_as_msgpack_encoded_them() -> None:
    class Name(str):
        pass

    class Version(int):
        pass

    cmd = PutConfig(Name("ns"), Name("k"), Name("v"), expected_version=Version(3))
    req = Request(cmd, Name("alice"), "2026-02-13T10:00:00.123456Z", Name("idem"))
    assert encode_request(req) == old.encode_request(req)
    assert request_fingerprint(req) == old.request_fingerprint(req)
    assert decode_request(encode_request(req)) == req
