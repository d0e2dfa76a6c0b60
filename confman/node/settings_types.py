"""The vocabulary of the settings table (``confman.node.settings``).

The values a config holds (``Member``, ``ApiKey``, ``HttpTls``), ``ConfigError``, the kinds of
TOML value a setting takes (each with its type check and conversion), the bounds a value must
keep (each with its doc and its message), and ``Setting``: one row of the table, attached to a
``NodeConfig`` field by ``toml(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROLES = ("viewer", "editor", "publisher", "admin")
ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The ``default`` of a setting that has none.
REQUIRED: Final = _Required()


# ---------------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member as every node knows it."""

    id: str
    raft: tuple[str, int]
    http: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: only its SHA-256 is kept."""

    name: str
    key_sha256: str
    roles: tuple[str, ...]
    namespaces: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class HttpTls:
    """``[http.tls]``: the API's certificate and key, and the CA of client certificates."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def parse_address(value: object, field_name: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) → (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{field_name}: expected 'host:port', got {value!r}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{field_name}: port must be a number, got {port_s!r}") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"{field_name}: invalid address {value!r}")
    return host, port


# ---------------------------------------------------------------------------------- kinds
@dataclass(frozen=True, slots=True)
class Kind:
    """What a TOML value must look like, and what it becomes."""

    name: str  # as the docs show it
    parse: Callable[[str, object, Path], object]  # (field, TOML value, config dir) -> value


def _expect(kind: type | tuple[type, ...], label: str) -> Callable[[str, object], None]:
    """A check that a value is a ``kind`` (a boolean is no number); the message names the
    field: ``http.max_body_bytes: expected int, got 'big'``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)

    def check(key: str, value: object) -> None:
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{key}: expected {label}, got {value!r}")

    return check


def _plain(
    name: str, kind: type | tuple[type, ...], label: str, convert: Callable[[Any], object]
) -> Kind:
    expect = _expect(kind, label)

    def parse(key: str, value: object, _base: Path) -> object:
        expect(key, value)
        return convert(value)

    return Kind(name, parse)


def _path(key: str, value: object, base: Path) -> object:
    _expect(str, "str")(key, value)
    assert isinstance(value, str)
    p = Path(value)
    return p if p.is_absolute() else base / p


def _address(key: str, value: object, _base: Path) -> object:
    _expect(str, "str")(key, value)
    return parse_address(value, key)


def _range_ms(key: str, value: object, _base: Path) -> object:
    _expect(list, "list")(key, value)
    assert isinstance(value, list)
    if len(value) != 2 or not all(isinstance(x, int) for x in value) or not 0 < value[0] < value[1]:
        raise ConfigError(f"{key}: expected [low, high] with 0 < low < high")
    return (value[0], value[1])


INT: Final = _plain("integer", int, "int", int)
FLOAT: Final = _plain("number", (int, float), "int/float", float)
BOOL: Final = _plain("boolean", bool, "bool", bool)
STR: Final = _plain("string", str, "str", str)
#: Element types are not checked (as before the table; an origin that is not a string
#: would only ever fail to match).
LIST: Final = _plain("array of strings", list, "list", tuple)
PATH: Final = Kind("path (relative to the config file)", _path)
ADDRESS: Final = Kind('"host:port"', _address)
RANGE_MS: Final = Kind("[low, high] integers", _range_ms)
#: Read by hand (``confman.node.config_checks``): a nested table, or an alternative spelling.
HAND: Final = Kind("", lambda key, value, base: value)


# ---------------------------------------------------------------------------------- bounds
@dataclass(frozen=True, slots=True)
class Bound:
    """A rule one value must follow; ``message`` may use ``{value!r}``."""

    doc: str
    ok: Callable[[Any], bool]
    message: str


POSITIVE: Final = Bound("> 0", lambda v: v > 0, "must be > 0")
NON_NEGATIVE: Final = Bound(
    ">= 0, 0: no limit", lambda v: v >= 0, "must be >= 0 (0 means no limit)"
)
SECONDS: Final = Bound("> 0", lambda v: v > 0, "must be a number of seconds > 0")


def one_of(*choices: str, message: str) -> Bound:
    return Bound(" or ".join(f'"{c}"' for c in choices), lambda v: v in choices, message)


def at_least(n: int) -> Bound:
    return Bound(f">= {n}", lambda v: v >= n, f"must be at least {n}")


# ---------------------------------------------------------------------------------- setting
@dataclass(frozen=True, slots=True)
class Setting:
    """One TOML setting; ``attr`` and ``default`` are filled in from its NodeConfig field."""

    key: str
    kind: Kind
    doc: str
    bounds: tuple[Bound, ...] = ()
    env: str | None = None
    #: A default computed from what was read before it: (values by attribute, this member)
    #: -> the TOML value to use; ``default_doc`` says it in words.
    derive: Callable[[Mapping[str, Any], Member], object] | None = None
    default_doc: str | None = None
    example: object = None  # the sample config's value, when it is not the default
    attr: str = ""
    default: object = REQUIRED

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]


def toml(
    key: str,
    kind: Kind,
    doc: str,
    *bounds: Bound,
    env: str | None = None,
    derive: Callable[[Mapping[str, Any], Member], object] | None = None,
    default_doc: str | None = None,
    example: object = None,
) -> dict[str, Setting]:
    """The ``metadata`` of a NodeConfig field that a TOML file sets."""
    return {"setting": Setting(key, kind, doc, bounds, env, derive, default_doc, example)}
