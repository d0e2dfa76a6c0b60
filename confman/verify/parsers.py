"""Readers for third-party history formats: Jepsen's etcd register logs and kv EDN maps.

Both formats are event streams (`invoke`, then `ok` / `fail` / `info` of the same process).
Time is the event's position in the stream; an invocation never completed is indeterminate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confman.verify.history import History, Operation, Status


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as `:timed-out` (kept distinct from strings)."""

    name: str

    def __repr__(self) -> str:
        return f":{self.name}"


TIMED_OUT = Keyword("timed-out")


@dataclass(slots=True)
class _Invocation:
    kind: str
    input: Any
    call: float


class _Pairing:
    """Pairs each process's completion with its open invocation, in stream order."""

    def __init__(self) -> None:
        self.open: dict[Any, tuple[int, _Invocation]] = {}
        self.done: list[tuple[int, Operation]] = []
        self.seq = 0

    def invoke(self, process: Any, inv: _Invocation, where: str) -> None:
        if process in self.open:
            raise ValueError(f"{where}: process {process} invokes twice without completing")
        self.open[process] = (self.seq, inv)
        self.seq += 1

    def complete(
        self, process: Any, kind: str, time: float, status: Status, output: Any, where: str
    ) -> None:
        if process not in self.open:
            raise ValueError(f"{where}: completion of process {process} without invocation")
        seq, inv = self.open.pop(process)
        if inv.kind != kind:
            raise ValueError(f"{where}: {kind} completes a {inv.kind} of process {process}")
        ret = None if status == "info" else time
        self.done.append((seq, Operation(process, kind, inv.input, output, inv.call, ret, status)))

    def history(self) -> History:
        for process, (seq, inv) in self.open.items():
            op = Operation(process, inv.kind, inv.input, None, inv.call, None, "info")
            self.done.append((seq, op))
        self.open.clear()
        self.done.sort(key=lambda item: item[0])
        return [op for _, op in self.done]


# --- EDN values (the small subset these logs use) ------------------------------------------

_TOKEN = re.compile(
    r'(?P<str>"(?:[^"\\]|\\.)*")|(?P<kw>:[^\s,\[\]{}()"]+)|(?P<open>[\[{(])'
    r'|(?P<close>[\]})])|(?P<atom>[^\s,\[\]{}()"]+)'
)
_SEPARATORS = re.compile(r"[\s,]*")
_CLOSERS = {"[": "]", "{": "}", "(": ")"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _tokenize(text: str) -> list[re.Match[str]]:
    tokens = []
    pos = _SEPARATORS.match(text).end()  # type: ignore[union-attr]
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot parse EDN at offset {pos}: {text!r}")
        tokens.append(m)
        pos = _SEPARATORS.match(text, m.end()).end()  # type: ignore[union-attr]
    return tokens


def parse_edn(text: str) -> Any:
    """Parse one EDN value: nil, booleans, integers, strings, keywords, vectors, lists
    (both as tuples) and maps (as dicts)."""
    tokens = _tokenize(text)
    value, pos = _edn_value(tokens, 0, text)
    if pos != len(tokens):
        raise ValueError(f"trailing data after EDN value: {text!r}")
    return value


def _edn_value(tokens: list[re.Match[str]], pos: int, text: str) -> tuple[Any, int]:
    if pos >= len(tokens):
        raise ValueError(f"unexpected end of EDN: {text!r}")
    tok = tokens[pos]
    if tok.group("str") is not None:
        raw = tok.group("str")[1:-1]
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), raw), pos + 1
    if tok.group("kw") is not None:
        return Keyword(tok.group("kw")[1:]), pos + 1
    if tok.group("atom") is not None:
        return _edn_atom(tok.group("atom"), text), pos + 1
    if tok.group("open") is not None:
        opener = tok.group("open")
        items: list[Any] = []
        pos += 1
        while pos < len(tokens) and tokens[pos].group("close") is None:
            item, pos = _edn_value(tokens, pos, text)
            items.append(item)
        if pos >= len(tokens) or tokens[pos].group("close") != _CLOSERS[opener]:
            raise ValueError(f"unbalanced EDN: {text!r}")
        if opener == "{":
            if len(items) % 2:
                raise ValueError(f"odd number of forms in EDN map: {text!r}")
            return dict(zip(items[::2], items[1::2], strict=True)), pos + 1
        return tuple(items), pos + 1
    raise ValueError(f"unexpected {tok.group().strip()!r} in EDN: {text!r}")


def _edn_atom(atom: str, text: str) -> Any:
    if atom == "nil":
        return None
    if atom in ("true", "false"):
        return atom == "true"
    try:
        return int(atom)
    except ValueError:
        raise ValueError(f"unsupported EDN atom {atom!r} in {text!r}") from None


# --- Jepsen etcd register logs ------------------------------------------------------------

_ETCD_LINE = re.compile(r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*?)\s*$")


def parse_jepsen_etcd(lines: Iterable[str]) -> History:
    """Operations of a Jepsen etcd log (`INFO jepsen.util - <process> :<type> :<f> <value>`)
    for `RegisterModel`: read/write/cas.

    `:fail :cas` means the compare did not match (an `ok` cas with output False); a completion
    whose value is `:timed-out` and any `:info` are indeterminate; other `:fail`s did not happen.
    """
    pairing = _Pairing()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _ETCD_LINE.match(line)
        if m is None:
            raise ValueError(f"line {lineno}: not a jepsen.util event: {line.rstrip()!r}")
        process, event, kind, raw = int(m[1]), m[2], m[3], m[4]
        where = f"line {lineno}"
        value = parse_edn(raw)
        if event == "invoke":
            arg = value if kind != "read" else None
            pairing.invoke(process, _Invocation(kind, arg, float(lineno)), where)
            continue
        status: Status
        if event == "info" or value == TIMED_OUT:
            status, output = "info", None
        elif event == "ok":
            status = "ok"
            output = value if kind == "read" else (True if kind == "cas" else None)
        elif event == "fail" and kind == "cas":
            status, output = "ok", False
        elif event == "fail":
            status, output = "fail", None
        else:
            raise ValueError(f"{where}: unknown event type :{event}")
        pairing.complete(process, kind, float(lineno), status, output, where)
    return pairing.history()


def load_jepsen_etcd(path: Path | str) -> History:
    """`parse_jepsen_etcd` of a file."""
    with open(path, encoding="utf-8") as f:
        return parse_jepsen_etcd(f)


# --- kv EDN histories -----------------------------------------------------------------------

_TYPES: dict[str, Status] = {"ok": "ok", "fail": "fail", "info": "info"}


def parse_kv_edn(lines: Iterable[str]) -> History:
    """Operations of a kv history, one EDN map an event with `:process`, `:type`, `:f`
    (`:get`, `:put`, `:append`), `:key` and `:value`, for `KeyValueModel`: the input is
    `(key, value)` (value None for a get) and a get's output is the value read."""
    pairing = _Pairing()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        event = parse_edn(line.strip())
        if not isinstance(event, dict):
            raise ValueError(f"{where}: expected an EDN map")
        try:
            process = event[Keyword("process")]
            etype = event[Keyword("type")].name
            kind = event[Keyword("f")].name
            key = event[Keyword("key")]
            value = event.get(Keyword("value"))
        except (KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: missing or malformed field {exc}") from None
        if etype == "invoke":
            arg = (key, None if kind == "get" else value)
            pairing.invoke(process, _Invocation(kind, arg, float(lineno)), where)
            continue
        if etype not in _TYPES:
            raise ValueError(f"{where}: unknown event type :{etype}")
        status = _TYPES[etype]
        output = value if status == "ok" and kind == "get" else None
        pairing.complete(process, kind, float(lineno), status, output, where)
    return pairing.history()


def load_kv_edn(path: Path | str) -> History:
    """`parse_kv_edn` of a file."""
    with open(path, encoding="utf-8") as f:
        return parse_kv_edn(f)
