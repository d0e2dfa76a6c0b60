"""The msgpack codecs as they were before the msgspec port (commit 5f383c5): the oracle the
shipped encoders must match byte for byte, and the reference ``benchmarks/bench_codec.py``
measures them against.

The encoders are copies of the old ones (``msgpack.packb`` of positional arrays), kept here,
independent of the shipped code, so a change to the shipped field lists shows up as a
difference. The decoders are the shipped reference readers alone (the old ``decode_*``: the
Python field checks that the msgspec fast paths defer to on anything they refuse).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from confman.node import codec
from confman.node.state import commands
from confman.node.state.commands import (
    Batch,
    Command,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    Request,
)
from confman.raft.types import ConfState, Entry, HardState, Message, Snapshot


# -- confman.node.codec (WAL records and peer messages) ------------------------------------
def _pack(fields: Any) -> bytes:
    data: bytes = msgpack.packb((1, fields), use_bin_type=True)
    return data


def _entry(e: Entry) -> tuple[Any, ...]:
    return (e.term, e.index, int(e.type), e.data)


def _conf_state(cs: ConfState) -> tuple[Any, ...]:
    return (cs.voters, cs.learners)


def _snapshot(s: Snapshot) -> tuple[Any, ...]:
    m = s.meta
    return (m.index, m.term, _conf_state(m.conf_state), s.data)


def encode_entry(entry: Entry) -> bytes:
    return _pack(_entry(entry))


def encode_entries(entries: list[Entry]) -> bytes:
    return _pack([_entry(e) for e in entries])


def encode_hard_state(hs: HardState) -> bytes:
    return _pack((hs.term, hs.vote, hs.commit))


def encode_conf_state(cs: ConfState) -> bytes:
    return _pack(_conf_state(cs))


def encode_snapshot(snap: Snapshot) -> bytes:
    return _pack(_snapshot(snap))


def encode_message(m: Message) -> bytes:
    return _pack(
        (
            int(m.type),
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            [_entry(e) for e in m.entries],
            m.commit,
            m.reject,
            m.reject_hint,
            m.hint_term,
            None if m.snapshot is None else _snapshot(m.snapshot),
            m.context,
        )
    )


def decode_message(data: bytes) -> Message:
    """The old ``decode_message``: msgpack, then the field checks of ``codec._message_from``."""
    return codec._decode(data, "message", {1: codec._message_from})


# -- confman.node.state.commands (log entries) ---------------------------------------------
def _body(cmd: Command) -> list[Any]:
    if isinstance(cmd, PutConfig):
        body = [3, cmd.namespace, cmd.key, cmd.value, cmd.type, cmd.expected_version]
        return [*body, cmd.create_only, True] if cmd.must_exist else [*body, cmd.create_only]
    if isinstance(cmd, DeleteConfig):
        body = [4, cmd.namespace, cmd.key, cmd.expected_version]
        return [*body, True] if cmd.must_exist else body
    if isinstance(cmd, PutNamespace):
        return [1, cmd.path, cmd.description, cmd.owner]
    if isinstance(cmd, DeleteNamespace):
        return [2, cmd.path]
    if isinstance(cmd, Batch):
        return [5, [_body(c) for c in cmd.commands]]
    if isinstance(cmd, CompactHistory):
        return [6, cmd.through]
    raise TypeError(f"not a command: {type(cmd).__name__}")


def encode_request(req: Request) -> bytes:
    data: bytes = msgpack.packb(
        [
            1,
            "r",
            req.actor,
            req.timestamp,
            req.idempotency_key,
            req.idempotency_ttl_s,
            _body(req.command),
        ]
    )
    return data


def encode_command(cmd: Command) -> bytes:
    data: bytes = msgpack.packb([1, "c", _body(cmd)])
    return data


def request_fingerprint(req: Request) -> bytes:
    return hashlib.sha256(msgpack.packb([req.actor, _body(req.command)])).digest()


def decode_request(data: bytes) -> Request:
    """The old ``decode_request``: msgpack, then the format-1 reader and the classes' checks."""
    return commands._checked_request(data)


def decode_command(data: bytes) -> Command:
    """The old ``decode_command``."""
    return commands._checked_command(data)
