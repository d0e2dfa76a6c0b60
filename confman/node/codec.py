"""Versioned msgpack encoding of the Raft value types (WAL records and peer messages).

Every top-level encoding is a msgpack array whose first element is the format version;
decoders dispatch on it, so old versions stay readable when the format evolves. Nested
values (entries inside a message, the snapshot of a message) are positional arrays with no
version of their own: the enclosing value's version covers them. ``bytes`` travel natively.

Decoding anything malformed raises ``CodecError`` and nothing else: the decoders check every
field's type, so a value that decodes is a well-formed value.

Encoding is msgspec's (a C encoder; the bytes are those msgpack wrote before, the tests compare
them with a copy of the msgpack encoder). Peer messages, the hot decode, go through msgspec's
typed decoder first: ``_MessageWire`` states the checks the Python readers below make (exact
lengths, exact types, non-negative ints, known enum values), so what it accepts they accept
with an equal value. Anything it refuses is handed to those readers, which raise the
``CodecError`` naming the field (or, should they accept it, decide). The other values (WAL
records) decode with the readers alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Annotated, Any, Literal, TypeVar

import msgpack
import msgspec

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

__all__ = [
    "CODEC_VERSION",
    "CodecError",
    "decode_conf_state",
    "decode_entries",
    "decode_entry",
    "decode_hard_state",
    "decode_message",
    "decode_snapshot",
    "encode_conf_state",
    "encode_entries",
    "encode_entry",
    "encode_hard_state",
    "encode_message",
    "encode_snapshot",
]

CODEC_VERSION = 1

T = TypeVar("T")

_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_DECODE_ERRORS = (
    ValueError,  # includes msgpack's ExtraData, FormatError, StackError, UnicodeDecodeError
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    msgpack.UnpackException,
)


class CodecError(ValueError):
    """Bytes that are not a valid encoding of the expected value (or a value not encodable)."""


# -- the msgspec form of a message (version 1), checked as the readers below check it ------
_UInt = Annotated[int, msgspec.Meta(ge=0)]
_EntryWire = tuple[_UInt, _UInt, EntryType, bytes]
_SnapshotWire = tuple[_UInt, _UInt, tuple[tuple[str, ...], tuple[str, ...]], bytes]
_MessageWire = tuple[
    MessageType,  # type
    str,  # to
    str,  # frm
    _UInt,  # term
    _UInt,  # log_term
    _UInt,  # index
    tuple[_EntryWire, ...],  # entries
    _UInt,  # commit
    bool,  # reject
    _UInt,  # reject_hint
    _UInt,  # hint_term
    _SnapshotWire | None,  # snapshot
    bytes,  # context
]


def msgpack_plain(value: object) -> object:
    """msgspec's ``enc_hook``: the plain ``str``/``int``/``bytes`` of a subclass, which msgspec
    does not encode itself and msgpack did (as the plain value); TypeError for anything else."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, bytes):
        return bytes.__bytes__(value)
    raise TypeError(f"cannot encode objects of type {type(value).__name__}")


_Setter = Callable[[Any, Any], None]
_ENCODER = msgspec.msgpack.Encoder(enc_hook=msgpack_plain)
_MESSAGE_DECODER = msgspec.msgpack.Decoder(tuple[Literal[1], _MessageWire])
#: What the fast decoder raises on bytes it refuses (UnicodeDecodeError is a ValueError; a
#: TypeError when given something that is not a buffer).
_FAST_REFUSALS = (msgspec.DecodeError, ValueError, TypeError)


# -- field checks (raise CodecError with the field's name) ----------------------------------
def _uint(v: Any, name: str) -> int:
    if type(v) is not int or v < 0:
        raise CodecError(f"{name}: expected a non-negative int, got {type(v).__name__}")
    return v


def _str(v: Any, name: str) -> str:
    if type(v) is not str:
        raise CodecError(f"{name}: expected a str, got {type(v).__name__}")
    return v


def _bytes(v: Any, name: str) -> bytes:
    if type(v) is not bytes:
        raise CodecError(f"{name}: expected bytes, got {type(v).__name__}")
    return v


def _bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise CodecError(f"{name}: expected a bool, got {type(v).__name__}")
    return v


def _array(v: Any, name: str, length: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise CodecError(f"{name}: expected an array, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise CodecError(f"{name}: expected {length} fields, got {len(v)}")
    return v


# -- plain (unversioned) parts -----------------------------------------------------------
def _entry_fields(e: Entry) -> tuple[int, int, int, bytes]:
    return (e.term, e.index, int(e.type), e.data)


def _entry_from(v: Any) -> Entry:
    f = _array(v, "entry", 4)
    etype = _ENTRY_TYPES.get(f[2]) if type(f[2]) is int else None
    if etype is None:
        raise CodecError(f"entry.type: unknown entry type {f[2]!r}")
    term, index = _uint(f[0], "entry.term"), _uint(f[1], "entry.index")
    return Entry(term, index, etype, _bytes(f[3], "entry.data"))


def _entries_from(v: Any) -> list[Entry]:
    """Decode a list of entries; an inlined fast path, ``_entry_from`` names any error."""
    out: list[Entry] = []
    append = out.append
    types = _ENTRY_TYPES
    for f in _array(v, "entries"):
        if type(f) is list and len(f) == 4:
            term, index, etype, data = f
            if (
                type(term) is int
                and type(index) is int
                and type(data) is bytes
                and type(etype) is int
                and term >= 0
                and index >= 0
                and etype in types
            ):
                append(Entry(term, index, types[etype], data))
                continue
        append(_entry_from(f))
    return out


def _hard_state_fields(hs: HardState) -> tuple[int, str | None, int]:
    return (hs.term, hs.vote, hs.commit)


def _hard_state_from(v: Any) -> HardState:
    f = _array(v, "hard_state", 3)
    vote = None if f[1] is None else _str(f[1], "hard_state.vote")
    return HardState(_uint(f[0], "hard_state.term"), vote, _uint(f[2], "hard_state.commit"))


def _conf_state_fields(cs: ConfState) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (cs.voters, cs.learners)


def _conf_state_from(v: Any) -> ConfState:
    f = _array(v, "conf_state", 2)
    voters = tuple(_str(n, "conf_state.voters") for n in _array(f[0], "conf_state.voters"))
    learners = tuple(_str(n, "conf_state.learners") for n in _array(f[1], "conf_state.learners"))
    return ConfState(voters, learners)


def _snapshot_fields(s: Snapshot) -> tuple[int, int, tuple[Any, ...], bytes]:
    m = s.meta
    return (m.index, m.term, _conf_state_fields(m.conf_state), s.data)


def _snapshot_from(v: Any) -> Snapshot:
    f = _array(v, "snapshot", 4)
    meta = SnapshotMeta(
        _uint(f[0], "snapshot.index"), _uint(f[1], "snapshot.term"), _conf_state_from(f[2])
    )
    return Snapshot(meta, _bytes(f[3], "snapshot.data"))


def _message_fields(m: Message) -> tuple[Any, ...]:
    return (
        int(m.type),
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        [_entry_fields(e) for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.hint_term,
        None if m.snapshot is None else _snapshot_fields(m.snapshot),
        m.context,
    )


def _slot_setters(cls: type[Any], names: tuple[str, ...]) -> tuple[_Setter, ...]:
    """The slot setters of the frozen dataclass ``cls``, whose fields must be ``names`` (the
    wire positions): building a message and its entries with them instead of the dataclasses'
    ``__init__`` takes a third less time. They have no ``__post_init__`` to skip."""
    if tuple(f.name for f in fields(cls)) != names:
        raise RuntimeError(f"{cls.__name__}'s fields changed: update the codec's wire form")
    return tuple(cls.__dict__[name].__set__ for name in names)


_ENTRY_SET = _slot_setters(Entry, ("term", "index", "type", "data"))
_MESSAGE_SET = _slot_setters(
    Message,
    (
        "type",
        "to",
        "frm",
        "term",
        "log_term",
        "index",
        "entries",
        "commit",
        "reject",
        "reject_hint",
        "hint_term",
        "snapshot",
        "context",
    ),
)
_new = object.__new__


def _message_of(f: _MessageWire) -> Message:
    """The message of fields the fast decoder checked (same positions as ``_message_fields``)."""
    entries: list[Entry] = []
    if f[6]:
        append = entries.append
        set_term, set_index, set_type, set_data = _ENTRY_SET
        for term, index, etype, data in f[6]:
            e = _new(Entry)
            set_term(e, term)
            set_index(e, index)
            set_type(e, etype)
            set_data(e, data)
            append(e)
    snap = f[11]
    snapshot = None
    if snap is not None:
        s_index, s_term, (voters, learners), s_data = snap
        snapshot = Snapshot(SnapshotMeta(s_index, s_term, ConfState(voters, learners)), s_data)
    msg = _new(Message)
    for set_field, value in zip(_MESSAGE_SET, f, strict=True):
        set_field(msg, value)
    _MESSAGE_SET[6](msg, tuple(entries))
    _MESSAGE_SET[11](msg, snapshot)
    return msg


def _message_from(v: Any) -> Message:
    f = _array(v, "message", 13)
    mtype = _MESSAGE_TYPES.get(f[0]) if type(f[0]) is int else None
    if mtype is None:
        raise CodecError(f"message.type: unknown message type {f[0]!r}")
    return Message(
        type=mtype,
        to=_str(f[1], "message.to"),
        frm=_str(f[2], "message.frm"),
        term=_uint(f[3], "message.term"),
        log_term=_uint(f[4], "message.log_term"),
        index=_uint(f[5], "message.index"),
        entries=tuple(_entries_from(f[6])),
        commit=_uint(f[7], "message.commit"),
        reject=_bool(f[8], "message.reject"),
        reject_hint=_uint(f[9], "message.reject_hint"),
        hint_term=_uint(f[10], "message.hint_term"),
        snapshot=None if f[11] is None else _snapshot_from(f[11]),
        context=_bytes(f[12], "message.context"),
    )


# -- versioned envelope ------------------------------------------------------------------
def _encode(fields: Any) -> bytes:
    try:
        return _ENCODER.encode((CODEC_VERSION, fields))
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot encode: {e}") from e


def _decode(data: bytes, what: str, readers: dict[int, Callable[[Any], T]]) -> T:
    """Unpack ``data`` and hand the body to the reader registered for its version."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        f = _array(obj, what, 2)
        reader = readers.get(f[0]) if type(f[0]) is int else None
        if reader is None:
            raise CodecError(f"{what}: unsupported codec version {f[0]!r}")
        return reader(f[1])
    except CodecError:
        raise
    except _DECODE_ERRORS as e:
        raise CodecError(f"{what}: malformed encoding ({type(e).__name__}: {e})") from e


def encode_entry(entry: Entry) -> bytes:
    """Encode one log entry."""
    return _encode(_entry_fields(entry))


def decode_entry(data: bytes) -> Entry:
    """Decode what ``encode_entry`` produced; ``CodecError`` on anything else."""
    return _decode(data, "entry", {1: _entry_from})


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """Encode a batch of entries (one WAL record)."""
    return _encode([_entry_fields(e) for e in entries])


def decode_entries(data: bytes) -> list[Entry]:
    """Decode what ``encode_entries`` produced; ``CodecError`` on anything else."""
    return _decode(data, "entries", {1: _entries_from})


def encode_hard_state(hs: HardState) -> bytes:
    """Encode a hard state (term, vote, commit)."""
    return _encode(_hard_state_fields(hs))


def decode_hard_state(data: bytes) -> HardState:
    """Decode what ``encode_hard_state`` produced; ``CodecError`` on anything else."""
    return _decode(data, "hard_state", {1: _hard_state_from})


def encode_conf_state(cs: ConfState) -> bytes:
    """Encode a membership (voters, learners)."""
    return _encode(_conf_state_fields(cs))


def decode_conf_state(data: bytes) -> ConfState:
    """Decode what ``encode_conf_state`` produced; ``CodecError`` on anything else."""
    return _decode(data, "conf_state", {1: _conf_state_from})


def encode_snapshot(snap: Snapshot) -> bytes:
    """Encode a snapshot (metadata and data)."""
    return _encode(_snapshot_fields(snap))


def decode_snapshot(data: bytes) -> Snapshot:
    """Decode what ``encode_snapshot`` produced; ``CodecError`` on anything else."""
    return _decode(data, "snapshot", {1: _snapshot_from})


def encode_message(msg: Message) -> bytes:
    """Encode a Raft message with its entries and optional snapshot."""
    return _encode(_message_fields(msg))


def decode_message(data: bytes) -> Message:
    """Decode what ``encode_message`` produced; ``CodecError`` on anything else."""
    try:
        _, fields = _MESSAGE_DECODER.decode(data)
    except _FAST_REFUSALS:
        return _decode(data, "message", {1: _message_from})
    return _message_of(fields)
