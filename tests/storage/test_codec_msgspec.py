"""The msgspec codec against the msgpack one it replaced (``tests/oracles/msgpack_codecs.py``).

- Every encoder writes the bytes the msgpack encoder wrote (mixed-version clusters and WAL
  files written by either release must read the same).
- ``decode_message``'s fast path accepts every encoding, and on mutated encodings (a field
  replaced, dropped, added or retyped) it never accepts what the reference readers refuse nor
  decodes to anything else: ``decode_message`` is the reference decoder, only faster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confman.node import codec
from confman.node.codec import CodecError
from confman.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from tests.oracles import msgpack_codecs as old
from tests.storage.test_codec import (
    conf_states,
    entries,
    hard_states,
    messages,
    msgpack_values,
    snapshots,
)

#: Lengths at msgpack's size-class boundaries (fixstr/str8/str16/str32, bin8/bin16/bin32).
SIZES = [0, 1, 31, 32, 255, 256, 65535, 65536]
u64_edges = st.sampled_from([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
wide_ints = u64_edges | st.integers(min_value=0, max_value=2**64 - 1)
wide_names = st.sampled_from(SIZES[:6]).flatmap(lambda n: st.text(min_size=n, max_size=n))
wide_bytes = st.sampled_from(SIZES).map(lambda n: bytes(range(256)) * (n // 256) + b"x" * (n % 256))
wide_entries = st.builds(Entry, wide_ints, wide_ints, st.sampled_from(EntryType), wide_bytes)
wide_conf_states = st.builds(
    ConfState,
    st.lists(wide_names, max_size=3).map(tuple),
    st.lists(wide_names, max_size=2).map(tuple),
)
wide_messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=wide_names,
    frm=wide_names,
    term=wide_ints,
    log_term=wide_ints,
    index=wide_ints,
    entries=st.lists(wide_entries, max_size=3).map(tuple),
    commit=wide_ints,
    reject=st.booleans(),
    reject_hint=wide_ints,
    hint_term=wide_ints,
    snapshot=st.none()
    | st.builds(
        Snapshot, st.builds(SnapshotMeta, wide_ints, wide_ints, wide_conf_states), wide_bytes
    ),
    context=wide_bytes,
)

ENCODERS = [
    (codec.encode_entry, old.encode_entry, entries | wide_entries),
    (codec.encode_entries, old.encode_entries, st.lists(entries | wide_entries, max_size=8)),
    (codec.encode_hard_state, old.encode_hard_state, hard_states),
    (codec.encode_conf_state, old.encode_conf_state, conf_states | wide_conf_states),
    (codec.encode_snapshot, old.encode_snapshot, snapshots),
    (codec.encode_message, old.encode_message, messages | wide_messages),
]


@pytest.mark.parametrize(
    ("new", "ref", "values"), ENCODERS, ids=[e.__name__ for e, _, _ in ENCODERS]
)
def test_encoders_write_the_msgpack_bytes(
    new: Callable[[Any], bytes], ref: Callable[[Any], bytes], values: st.SearchStrategy[Any]
) -> None:
    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(values)
    def check(value: Any) -> None:
        assert new(value) == ref(value)

    check()


def _outcome(decode: Any, data: bytes) -> tuple[str, str]:
    """What ``decode`` makes of ``data``: the repr of the value (a repr tells an enum member
    from an int and True from 1, which ``==`` does not), or the CodecError's text."""
    try:
        return ("value", repr(decode(data)))
    except CodecError as e:
        return ("error", str(e))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(messages | wide_messages)
def test_the_fast_path_decodes_every_message(msg: Message) -> None:
    data = old.encode_message(msg)
    _, fields = codec._MESSAGE_DECODER.decode(data)  # not the fallback
    decoded = codec._message_of(fields)
    assert decoded == msg and repr(decoded) == repr(msg) == repr(old.decode_message(data))
    assert type(decoded.entries) is tuple and all(type(e) is Entry for e in decoded.entries)


def _as_lists(v: Any) -> Any:
    return [_as_lists(x) for x in v] if isinstance(v, list | tuple) else v


def paths(v: Any, at: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """The index paths of every part of the nested lists ``v`` (``()`` for ``v`` itself)."""
    out = [at]
    if isinstance(v, list):
        for i, x in enumerate(v):
            out += paths(x, (*at, i))
    return out


#: Values close to the right ones: the other int-like types, out-of-range ints, the other
#: string-like type, a missing value.
near_values = st.sampled_from([True, False, -1, 2**63, 0, 1, 7, 16, 1.0, "", "a", b"", b"a", None])


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Any], fields: Any) -> bytes:
    """The encoding of a value with one part of its body replaced, dropped or extended."""
    body = _as_lists([1, fields(draw(values))])
    path = draw(st.sampled_from(paths(body)))
    how = draw(st.sampled_from(["replace", "near", "drop", "append", "wrap"]))
    if not path:
        body = draw(msgpack_values) if how == "replace" else [body] if how == "wrap" else body
        return bytes(msgpack.packb(body))
    parent = body
    for i in path[:-1]:
        parent = parent[i]
    i = path[-1]
    if how == "replace":
        parent[i] = draw(msgpack_values)
    elif how == "near":
        parent[i] = draw(near_values)
    elif how == "drop":
        del parent[i]
    elif how == "append":
        parent.insert(i + 1, draw(near_values))
    else:
        parent[i] = [parent[i]]
    return bytes(msgpack.packb(body))


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(mutated(messages, codec._message_fields))
def test_mutated_messages_decode_as_the_reference_decides(data: bytes) -> None:
    reference = _outcome(old.decode_message, data)
    try:
        _, fields = codec._MESSAGE_DECODER.decode(data)
    except codec._FAST_REFUSALS:
        pass
    else:  # what the fast path accepts, the reference accepts as the same value
        assert ("value", repr(codec._message_of(fields))) == reference
    assert _outcome(codec.decode_message, data) == reference


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64) | mutated(messages, codec._message_fields).map(lambda b: b[:-1]))
def test_garbage_decodes_as_the_reference_decides(data: bytes) -> None:
    assert _outcome(codec.decode_message, data) == _outcome(old.decode_message, data)


class _Name(str):
    def __str__(self) -> str:
        return "not this"


class _Int(int):
    def __index__(self) -> int:
        return 99


class _Bytes(bytes):
    def __bytes__(self) -> bytes:
        return b"not this"


def test_subclasses_of_str_int_and_bytes_encode_as_msgpack_encoded_them() -> None:
    """msgspec refuses subclasses; the encoder's hook hands it their plain value, as msgpack
    packed it (not what ``__str__`` and the like would say)."""
    entry = Entry(_Int(3), _Int(4), EntryType.NORMAL, _Bytes(b"data"))
    msg = Message(MessageType.APPEND, _Name("a"), _Name("b"), _Int(7), entries=(entry,))
    assert codec.encode_message(msg) == old.encode_message(msg)
    assert codec.decode_message(codec.encode_message(msg)) == msg
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode_message(Message(MessageType.APPEND, "a", "b", context=object()))  # type: ignore[arg-type]
