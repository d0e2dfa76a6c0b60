"""Round trips and garbage rejection of the versioned msgpack codec."""

from __future__ import annotations

import contextlib

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
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
names = st.text(min_size=1, max_size=12)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), st.binary(max_size=64))
hard_states = st.builds(HardState, u64, st.none() | names, u64)
conf_states = st.builds(
    ConfState,
    st.lists(names, max_size=5).map(tuple),
    st.lists(names, max_size=3).map(tuple),
)
snapshots = st.builds(
    Snapshot, st.builds(SnapshotMeta, u64, u64, conf_states), st.binary(max_size=128)
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=names,
    frm=names,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    hint_term=u64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
)

PAIRS = [
    (codec.encode_entry, codec.decode_entry, entries),
    (codec.encode_entries, codec.decode_entries, st.lists(entries, max_size=8)),
    (codec.encode_hard_state, codec.decode_hard_state, hard_states),
    (codec.encode_conf_state, codec.decode_conf_state, conf_states),
    (codec.encode_snapshot, codec.decode_snapshot, snapshots),
    (codec.encode_message, codec.decode_message, messages),
]
DECODERS = [d for _, d, _ in PAIRS]


@pytest.mark.parametrize(("encode", "decode", "values"), PAIRS, ids=[d.__name__ for d in DECODERS])
def test_round_trip(encode, decode, values) -> None:
    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(values)
    def check(value) -> None:
        data = encode(value)
        assert decode(data) == value
        assert decode(data) is not value

    check()


def test_decoded_enums_are_enum_members() -> None:
    e = codec.decode_entry(codec.encode_entry(Entry(1, 2, EntryType.CONF_CHANGE, b"x")))
    assert e.type is EntryType.CONF_CHANGE
    m = codec.decode_message(codec.encode_message(Message(MessageType.VOTE, "a", "b")))
    assert m.type is MessageType.VOTE


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.binary(max_size=64))
def test_garbage_raises_only_codec_error(decode, data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


@pytest.mark.parametrize(("encode", "decode", "values"), PAIRS, ids=[d.__name__ for d in DECODERS])
def test_every_truncation_is_rejected(encode, decode, values) -> None:
    @settings(max_examples=30, deadline=None, derandomize=True)
    @given(values)
    def check(value) -> None:
        data = encode(value)
        for n in range(len(data)):
            with pytest.raises(CodecError):
                decode(data[:n])

    check()


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(CodecError, match="malformed"):
        codec.decode_hard_state(codec.encode_hard_state(HardState(1, "a", 1)) + b"\x00")


def test_unknown_version_is_a_clear_error() -> None:
    data = msgpack.packb((99, (1, None, 0)))
    with pytest.raises(CodecError, match="unsupported codec version 99"):
        codec.decode_hard_state(data)


@pytest.mark.parametrize(
    ("decode", "body", "match"),
    [
        (codec.decode_entry, (1, 2, 7, b""), "unknown entry type"),
        (codec.decode_entry, (1, 2, 0, "text"), "entry.data"),
        (codec.decode_entry, (-1, 2, 0, b""), "entry.term"),
        (codec.decode_entry, (True, 2, 0, b""), "entry.term"),
        (codec.decode_entry, (1, 2, 0), "expected 4 fields"),
        (codec.decode_hard_state, (1, 5, 0), "hard_state.vote"),
        (codec.decode_conf_state, (("a", 1), ()), "conf_state.voters"),
        (codec.decode_conf_state, {"voters": []}, "expected an array"),
        (codec.decode_entries, ((1, 1, 0, b""), None), "expected an array"),
    ],
)
def test_wrong_field_types_name_the_field(decode, body, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode(msgpack.packb((codec.CODEC_VERSION, body)))


def test_message_field_checks() -> None:
    good = codec._message_fields(Message(MessageType.APPEND, "a", "b"))
    bad_type = (999, *good[1:])
    bad_reject = (*good[:8], 1, *good[9:])
    with pytest.raises(CodecError, match="unknown message type"):
        codec.decode_message(msgpack.packb((1, bad_type)))
    with pytest.raises(CodecError, match=r"message\.reject"):
        codec.decode_message(msgpack.packb((1, bad_reject)))


def test_unencodable_value_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        codec.encode_entry(Entry(1, 2, EntryType.NORMAL, object()))  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        codec.encode_hard_state(HardState(2**64, None, 0))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=14),
    max_leaves=30,
)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(body=msgpack_values)
def test_well_formed_msgpack_of_the_wrong_shape_raises_only_codec_error(decode, body) -> None:
    with contextlib.suppress(CodecError):
        decode(msgpack.packb((codec.CODEC_VERSION, body)))
