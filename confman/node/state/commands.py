"""The replicated commands, their request envelope and their versioned msgpack encoding.

Every payload starts with its format version; decoders are kept per version so entries
written by an older release stay decodable. Format 1:

- request: ``[1, "r", actor, timestamp, idempotency_key, idempotency_ttl_s, command]``
- bare command: ``[1, "c", command]``
- command: ``[kind, *fields]`` with kind 1 PutNamespace, 2 DeleteNamespace, 3 PutConfig,
  4 DeleteConfig, 5 Batch (``[5, [command, ...]]``, members are never batches),
  6 CompactHistory (``[6, through]``, never in a batch). PutConfig and DeleteConfig carry a
  trailing ``must_exist`` only when it is true, so older encodings stay byte-identical.

Construction validates field types, so a leader cannot propose what a follower would reject.

Encoding is msgspec's C encoder over the same positional lists (the bytes msgpack wrote before;
``request_fingerprint`` hashes exactly those). Decoding goes through msgspec's typed decoder
first: the ``_...V1`` Structs state the checks the classes' ``__post_init__`` and the format-1
reader make (exact lengths, exact types, non-empty strings, non-negative ints), so what they
accept the reader accepts with an equal value, and the commands are built from them without
checking again. Anything they refuse goes to the format-1 reader (``_decode``), whose
``CommandDecodeError`` text is what a rejected entry records in the replicated state: it is
the same text on every node, whichever release decodes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgpack
import msgspec

from confman.node.codec import msgpack_plain
from confman.node.state.field_checks import check_bool as _check_bool
from confman.node.state.field_checks import check_int as _check_int
from confman.node.state.field_checks import check_str as _check_str

#: The format version written by this release.
FORMAT_VERSION = 1
#: How long an idempotency key is remembered unless the request says otherwise.
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600

_TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


class CommandDecodeError(ValueError):
    """A payload is not a command this release can decode (garbage or unknown version)."""


@dataclass(frozen=True, slots=True)
class PutNamespace:
    """Create a namespace or replace its description and owner."""

    path: str
    description: str | None = None
    owner: str | None = None

    def __post_init__(self) -> None:
        _check_str("path", self.path)
        _check_str("description", self.description, optional=True, empty=True)
        _check_str("owner", self.owner, optional=True, empty=True)


@dataclass(frozen=True, slots=True)
class DeleteNamespace:
    """Delete a namespace together with all its entries."""

    path: str

    def __post_init__(self) -> None:
        _check_str("path", self.path)


@dataclass(frozen=True, slots=True)
class PutConfig:
    """Create or update an entry.

    ``expected_version`` is a compare-and-set (If-Match); ``create_only`` fails when the
    entry exists (If-None-Match: *); ``must_exist`` fails when it does not (If-Match: *).
    """

    namespace: str
    key: str
    value: str
    type: str = "string"
    expected_version: int | None = None
    create_only: bool = False
    must_exist: bool = False

    def __post_init__(self) -> None:
        _check_str("namespace", self.namespace)
        _check_str("key", self.key)
        _check_str("value", self.value, empty=True)
        _check_str("type", self.type)
        _check_int("expected_version", self.expected_version, optional=True)
        _check_bool("create_only", self.create_only)
        _check_bool("must_exist", self.must_exist)


@dataclass(frozen=True, slots=True)
class DeleteConfig:
    """Delete an entry, optionally only at ``expected_version`` (If-Match); ``must_exist``
    turns the absent entry's "not found" into a failed precondition (If-Match: *)."""

    namespace: str
    key: str
    expected_version: int | None = None
    must_exist: bool = False

    def __post_init__(self) -> None:
        _check_str("namespace", self.namespace)
        _check_str("key", self.key)
        _check_int("expected_version", self.expected_version, optional=True)
        _check_bool("must_exist", self.must_exist)


@dataclass(frozen=True, slots=True)
class CompactHistory:
    """Forget the change history (audit rows, what watches replay) up to log ``through``."""

    through: int

    def __post_init__(self) -> None:
        _check_int("through", self.through)


SimpleCommand = PutNamespace | DeleteNamespace | PutConfig | DeleteConfig


@dataclass(frozen=True, slots=True)
class Batch:
    """Several commands applied atomically: all of them, or none when one fails."""

    commands: tuple[SimpleCommand, ...]

    def __post_init__(self) -> None:
        given: Iterable[SimpleCommand] = self.commands  # callers may pass a list
        if not isinstance(given, tuple):
            object.__setattr__(self, "commands", tuple(given))
        for cmd in self.commands:
            if not isinstance(cmd, PutNamespace | DeleteNamespace | PutConfig | DeleteConfig):
                raise TypeError(f"a batch cannot hold {type(cmd).__name__}")


Command = SimpleCommand | Batch | CompactHistory


@dataclass(frozen=True, slots=True)
class Request:
    """The envelope every command travels in; all that apply may depend on besides state.

    ``timestamp`` is RFC 3339 UTC with microseconds (``2026-02-13T10:00:00.123456Z``),
    fixed by the leader. ``idempotency_key`` makes retries return the first result for
    ``idempotency_ttl_s`` seconds after ``timestamp``.
    """

    command: Command
    actor: str
    timestamp: str
    idempotency_key: str | None = None
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S

    def __post_init__(self) -> None:
        if not isinstance(
            self.command,
            PutNamespace | DeleteNamespace | PutConfig | DeleteConfig | Batch | CompactHistory,
        ):
            raise TypeError(f"not a command: {type(self.command).__name__}")
        _check_str("actor", self.actor)
        timestamp_micros(self.timestamp)
        _check_str("idempotency_key", self.idempotency_key, optional=True)
        _check_int("idempotency_ttl_s", self.idempotency_ttl_s)


def format_timestamp(moment: datetime) -> str:
    """``moment`` (timezone-aware) as the RFC 3339 UTC form commands carry."""
    # isoformat is ~5x cheaper than strftime; UTC renders as "+00:00", replaced by "Z".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def timestamp_micros(timestamp: str) -> int:
    """Microseconds since the Unix epoch of a command timestamp; ValueError if malformed."""
    return (_parse_timestamp(timestamp) - _EPOCH) // _ONE_MICRO


def _parse_timestamp(timestamp: str) -> datetime:
    if not isinstance(timestamp, str) or not _TIMESTAMP_RE.fullmatch(timestamp):
        raise ValueError(f"timestamp must look like 2026-02-13T10:00:00.123456Z: {timestamp!r}")
    return datetime.fromisoformat(timestamp)  # raises ValueError on e.g. month 13


# -- encoding ---------------------------------------------------------------------------


def _command_body(cmd: Command) -> list[Any]:
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
        return [5, [_command_body(c) for c in cmd.commands]]
    if isinstance(cmd, CompactHistory):
        return [6, cmd.through]
    raise TypeError(f"not a command: {type(cmd).__name__}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=msgpack_plain)


def encode_request(req: Request) -> bytes:
    """The bytes of a log entry carrying ``req`` (current format version)."""
    return _ENCODER.encode(
        [
            FORMAT_VERSION,
            "r",
            req.actor,
            req.timestamp,
            req.idempotency_key,
            req.idempotency_ttl_s,
            _command_body(req.command),
        ]
    )


def encode_command(cmd: Command) -> bytes:
    """A bare command (without envelope) in the current format version."""
    return _ENCODER.encode([FORMAT_VERSION, "c", _command_body(cmd)])


def request_fingerprint(req: Request) -> bytes:
    """SHA-256 identifying what a request asks (actor and command, not time or key).

    Stored with idempotency keys, so it must never change for a given request: it is
    computed over the format-1 body whatever format later releases write.
    """
    return hashlib.sha256(_ENCODER.encode([req.actor, _command_body(req.command)])).digest()


# -- decoding ---------------------------------------------------------------------------


def _v1_command(body: Any, *, in_batch: bool = False) -> Command:
    if not isinstance(body, list) or not body:
        raise ValueError("command is not a non-empty array")
    kind, fields = body[0], body[1:]
    if kind == 3 and len(fields) in (6, 7):
        return PutConfig(*fields)
    if kind == 4 and len(fields) in (3, 4):
        return DeleteConfig(*fields)
    if kind == 1 and len(fields) == 3:
        return PutNamespace(*fields)
    if kind == 2 and len(fields) == 1:
        return DeleteNamespace(*fields)
    if kind == 5 and len(fields) == 1 and not in_batch and isinstance(fields[0], list):
        return Batch(tuple(_v1_command(m, in_batch=True) for m in fields[0]))  # type: ignore[misc]
    if kind == 6 and len(fields) == 1 and not in_batch:
        return CompactHistory(*fields)
    raise ValueError(f"unknown command kind {kind!r} with {len(fields)} fields")


def _v1(payload: list[Any]) -> Command | Request:
    if len(payload) == 7 and payload[1] == "r":
        _, _, actor, timestamp, key, ttl, body = payload
        return Request(_v1_command(body), actor, timestamp, key, ttl)
    if len(payload) == 3 and payload[1] == "c":
        return _v1_command(payload[2])
    raise ValueError("neither a request nor a command")


_DECODERS = {1: _v1}


def _decode(data: bytes) -> Command | Request:
    try:
        payload = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        # the exception's text may differ between msgpack releases; results must not
        raise CommandDecodeError(f"not msgpack ({type(exc).__name__})") from exc
    if not isinstance(payload, list) or not payload:
        raise CommandDecodeError("payload is not a versioned array")
    version = payload[0]
    decoder = _DECODERS.get(version) if type(version) is int else None
    if decoder is None:
        raise CommandDecodeError(f"unknown command format version {version!r}")
    try:
        return decoder(payload)
    except (TypeError, ValueError) as exc:
        raise CommandDecodeError(f"format {version}: {exc}") from exc


def _checked_request(data: bytes) -> Request:
    result = _decode(data)
    if not isinstance(result, Request):
        raise CommandDecodeError("payload is a bare command, not a request")
    return result


def _checked_command(data: bytes) -> Command:
    result = _decode(data)
    if isinstance(result, Request):
        raise CommandDecodeError("payload is a request, not a bare command")
    return result


# -- the msgspec decoders: format 1 as types; what they refuse, the reader above explains ---

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_UInt = Annotated[int, msgspec.Meta(ge=0)]
_Setter = Callable[[Any, Any], None]
_new = object.__new__


def _setters(cls: type[Any]) -> tuple[_Setter, ...]:
    """The slot setters of the frozen dataclass ``cls``, in field order. The wire types build
    the commands with them, skipping ``__post_init__``: they have checked the same things."""
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


_PUT_NAMESPACE = _setters(PutNamespace)
_DELETE_NAMESPACE = _setters(DeleteNamespace)
_PUT_CONFIG = _setters(PutConfig)
_DELETE_CONFIG = _setters(DeleteConfig)
_COMPACT_HISTORY = _setters(CompactHistory)
_BATCH = _setters(Batch)
_REQUEST = _setters(Request)


class _PutNamespaceV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=1, tag_field="kind"
):
    path: _NonEmpty
    description: str | None
    owner: str | None

    def build(self) -> PutNamespace:
        cmd = _new(PutNamespace)
        path, description, owner = _PUT_NAMESPACE
        path(cmd, self.path)
        description(cmd, self.description)
        owner(cmd, self.owner)
        return cmd


class _DeleteNamespaceV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=2, tag_field="kind"
):
    path: _NonEmpty

    def build(self) -> DeleteNamespace:
        cmd = _new(DeleteNamespace)
        _DELETE_NAMESPACE[0](cmd, self.path)
        return cmd


class _PutConfigV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=3, tag_field="kind"
):
    namespace: _NonEmpty
    key: _NonEmpty
    value: str
    type: _NonEmpty
    expected_version: _UInt | None
    create_only: bool
    must_exist: bool = False  # written only when true

    def build(self) -> PutConfig:
        cmd = _new(PutConfig)
        namespace, key, value, type_, expected_version, create_only, must_exist = _PUT_CONFIG
        namespace(cmd, self.namespace)
        key(cmd, self.key)
        value(cmd, self.value)
        type_(cmd, self.type)
        expected_version(cmd, self.expected_version)
        create_only(cmd, self.create_only)
        must_exist(cmd, self.must_exist)
        return cmd


class _DeleteConfigV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=4, tag_field="kind"
):
    namespace: _NonEmpty
    key: _NonEmpty
    expected_version: _UInt | None
    must_exist: bool = False  # written only when true

    def build(self) -> DeleteConfig:
        cmd = _new(DeleteConfig)
        namespace, key, expected_version, must_exist = _DELETE_CONFIG
        namespace(cmd, self.namespace)
        key(cmd, self.key)
        expected_version(cmd, self.expected_version)
        must_exist(cmd, self.must_exist)
        return cmd


_SimpleV1 = _PutNamespaceV1 | _DeleteNamespaceV1 | _PutConfigV1 | _DeleteConfigV1


class _BatchV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=5, tag_field="kind"
):
    commands: tuple[_SimpleV1, ...]  # a batch in a batch, or a compaction, is refused

    def build(self) -> Batch:
        cmd = _new(Batch)
        _BATCH[0](cmd, tuple([c.build() for c in self.commands]))
        return cmd


class _CompactHistoryV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=6, tag_field="kind"
):
    through: _UInt

    def build(self) -> CompactHistory:
        cmd = _new(CompactHistory)
        _COMPACT_HISTORY[0](cmd, self.through)
        return cmd


_CommandV1 = _SimpleV1 | _BatchV1 | _CompactHistoryV1


class _RequestV1(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: Literal[1]
    kind: Literal["r"]
    actor: _NonEmpty
    timestamp: str  # checked by _parse_timestamp after decoding
    idempotency_key: _NonEmpty | None
    idempotency_ttl_s: _UInt
    command: _CommandV1

    def build(self) -> Request:
        req = _new(Request)
        command, actor, timestamp, idempotency_key, idempotency_ttl_s = _REQUEST
        command(req, self.command.build())
        actor(req, self.actor)
        timestamp(req, self.timestamp)
        idempotency_key(req, self.idempotency_key)
        idempotency_ttl_s(req, self.idempotency_ttl_s)
        return req


class _BareCommandV1(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: Literal[1]
    kind: Literal["c"]
    command: _CommandV1


_REQUEST_DECODER = msgspec.msgpack.Decoder(_RequestV1)
_COMMAND_DECODER = msgspec.msgpack.Decoder(_BareCommandV1)
#: What the msgspec decoders raise on bytes they refuse (UnicodeDecodeError and the timestamp
#: check are ValueErrors; TypeError when given something that is not a buffer).
_FAST_REFUSALS = (msgspec.DecodeError, ValueError, TypeError)


def decode_request(data: bytes) -> Request:
    """The request a log entry carries; CommandDecodeError if it is not one."""
    try:
        wire = _REQUEST_DECODER.decode(data)
        _parse_timestamp(wire.timestamp)
    except _FAST_REFUSALS:
        return _checked_request(data)
    return wire.build()


def decode_command(data: bytes) -> Command:
    """A bare command encoded by ``encode_command``; CommandDecodeError otherwise."""
    try:
        wire = _COMMAND_DECODER.decode(data)
    except _FAST_REFUSALS:
        return _checked_command(data)
    return wire.command.build()
