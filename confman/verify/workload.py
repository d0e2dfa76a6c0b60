"""The verify workload: concurrent asyncio HTTP clients doing reads, writes, CAS and deletes.

Each client loops until the deadline: pick a random node and a random key slot, pick an
operation, send it (following ``307`` redirects with method and body kept, all hops inside
one per-request timeout) and record it in a `HistoryRecorder`:

- ``read``  ``(key, level)`` -> ``(value, version)`` or None; ``level`` is ``local``,
  ``linearizable`` or ``lease``. Only non-local reads are checked for linearizability.
- ``write`` ``(key, value)`` -> the new version (values are unique in a run).
- ``cas``   ``(key, expected_version, value)`` -> the new version, or False on ``412``;
  ``If-Match: "<v>"`` with the last version this client saw of the key, or
  ``If-None-Match: *`` (expected None: create only) when it last saw the key absent.
- ``delete`` ``(key,)`` -> True (``204``) or False (``404`` Configuration not found).

Recording rules (`write_outcome`, `read_outcome`):

- a definite answer is ``ok``: 2xx, a ``412`` on a CAS (False: the version differed when
  the command was applied, which the model checks; Jepsen would drop it as ``fail``), a
  ``404`` entry on a delete or read;
- a definite failure is ``fail``: a connection that could not be opened (the request was
  never sent), other 4xx, ``503 No leader available`` and
  ``503 Write not committed`` (the runtime raises both only when nothing is proposed or the
  entry was definitely replaced), a redirect loop;
- everything else is ``info`` (indeterminate): a timeout, a connection lost after the
  request went out (a reused keep-alive connection to a killed node included), ``503
  Replication timed out``, any other 5xx. Reads that are not ``ok`` are dropped by the
  checker either way.

Every mutation carries a fresh ``Idempotency-Key`` and is never retried, so an indeterminate
operation stays indeterminate.

Each key slot lives in its own namespace (``<prefix>-<slot>-<generation>``, key ``k``); after
``rotate_after`` mutations the slot moves to a fresh namespace. That keeps every namespace's
audit trail under the API's 1000-event page (the end-of-run audit checks read it whole) and
keeps each checked sub-history small.

The requests themselves and the recording rules are in ``confman.verify.replies`` (their
names stay importable from here); this module holds the clients and their bookkeeping.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from confman.verify.history import HistoryRecorder, Status
from confman.verify.replies import (
    DEFINITE_503,
    DOCUMENTED_5XX,
    MAX_REDIRECTS,
    Reply,
    make_session,
    read_outcome,
    send,
    write_outcome,
)

READ_LEVELS = ("local", "linearizable", "lease")
CHECKED_LEVELS = frozenset({"linearizable", "lease"})
ENTRY_KEY = "k"


# ------------------------------------------------------------------------------ config
@dataclass(slots=True)
class WorkloadConfig:
    """What the clients do; the mix weights need not sum to one."""

    clients: int = 10
    keys: int = 8
    seed: int = 0
    timeout: float = 2.0
    """Seconds per request, redirects included."""
    rate: float = 0.0
    """Target operations per second over all clients (0: as fast as they go)."""
    reads: float = 0.5
    writes: float = 0.25
    cas: float = 0.18
    deletes: float = 0.05
    read_levels: dict[str, float] = field(
        default_factory=lambda: {"linearizable": 0.5, "lease": 0.2, "local": 0.3}
    )
    rotate_after: int = 250
    """Mutations a key slot takes before it moves to a fresh namespace."""
    prefix: str = "vf"


@dataclass(slots=True)
class Slot:
    """One key slot: the namespace generation it is on."""

    index: int
    generation: int = 0
    mutations: int = 0
    rotating: bool = False
    generations: list[str] = field(default_factory=list)
    """Every namespace this slot has used (created and acknowledged), oldest first."""


@dataclass(slots=True)
class Anomaly:
    """An answer the contract does not allow (an unexpected 5xx, a malformed body, ...)."""

    at: float
    client: int | str
    method: str
    path: str
    node: str
    status: int
    title: str | None
    detail: str


class WorkloadStats:
    """Counters shared by all clients (the event loop is single-threaded)."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """(kind or kind:level, status) -> operations."""
        self.http: Counter[tuple[int, str]] = Counter()
        """(HTTP status, problem title or error) -> answers (every hop's last answer)."""
        self.anomalies: list[Anomaly] = []
        self.unexpected_5xx: Counter[tuple[int, str]] = Counter()
        self.redirects = 0

    def note(self, reply: Reply) -> None:
        label = reply.title or reply.error or ""
        self.http[(reply.status, label)] += 1
        self.redirects += reply.hops

    def to_json(self) -> dict[str, Any]:
        return {
            "outcomes": {f"{k}/{s}": n for (k, s), n in sorted(self.outcomes.items())},
            "http": {f"{s} {t}".strip(): n for (s, t), n in sorted(self.http.items())},
            "unexpected_5xx": {f"{s} {t}".strip(): n for (s, t), n in self.unexpected_5xx.items()},
            "anomalies": len(self.anomalies),
            "redirects": self.redirects,
        }


# ------------------------------------------------------------------------------ workload
class Workload:
    """N clients against the nodes at ``urls`` with the API key ``api_key``."""

    def __init__(
        self,
        urls: Sequence[str],
        api_key: str,
        config: WorkloadConfig,
        recorder: HistoryRecorder | None = None,
    ) -> None:
        if not urls:
            raise ValueError("the workload needs at least one node URL")
        self.urls = [u.rstrip("/") + "/" for u in urls]
        self.api_key = api_key
        self.cfg = config
        self.recorder = recorder or HistoryRecorder()
        self.stats = WorkloadStats()
        self.slots = [Slot(i) for i in range(config.keys)]
        self.meta: dict[int, dict[str, Any]] = {}
        """Operation handle -> extra facts (node that answered, HTTP status, problem title or
    error, and for indeterminate operations ``gave_up``: when the client stopped waiting)."""
        self.written: set[str] = set()
        """Every value any client tried to write."""
        self._stop = threading.Event()
        self._session: aiohttp.ClientSession | None = None
        self._counter = 0
        self._t0 = time.monotonic()

    # -------------------------------------------------------------- names
    def namespace(self, slot: int, generation: int) -> str:
        return f"{self.cfg.prefix}-{slot}-{generation}"

    @staticmethod
    def key_of(namespace: str) -> str:
        """The history key of the single entry of ``namespace``."""
        return f"{namespace}/{ENTRY_KEY}"

    def namespaces(self) -> list[str]:
        """Every namespace the run created (and saw acknowledged)."""
        return [ns for s in self.slots for ns in s.generations]

    def stop(self) -> None:
        """Ask every client to stop after its current operation (thread-safe)."""
        self._stop.set()

    # -------------------------------------------------------------- plumbing
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"X-Api-Key": self.api_key}
        if extra:
            h.update(extra)
        return h

    async def _send(
        self,
        client: int | str,
        method: str,
        base: str,
        path: str,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> Reply:
        assert self._session is not None
        reply = await send(
            self._session,
            method,
            base,
            path,
            headers=self._headers(headers),
            json_body=json_body,
            timeout=self.cfg.timeout if timeout is None else timeout,
        )
        self.stats.note(reply)
        if reply.status >= 500 and reply.status not in DOCUMENTED_5XX:
            self.stats.unexpected_5xx[(reply.status, reply.title or "")] += 1
            self._anomaly(client, method, path, reply)
        elif reply.status and reply.status not in (200, 201, 204, 404, 412, 503, 504):
            self._anomaly(client, method, path, reply)
        return reply

    def _anomaly(self, client: int | str, method: str, path: str, reply: Reply) -> None:
        detail = ""
        if isinstance(reply.body, dict):
            detail = str(reply.body.get("detail", ""))[:300]
        self.stats.anomalies.append(
            Anomaly(
                time.monotonic(),
                client,
                method,
                path,
                reply.node,
                reply.status,
                reply.title,
                detail,
            )
        )

    def _record(
        self, handle: int, kind: str, status: Status, output: Any, reply: Reply, label: str
    ) -> None:
        if status == "ok":
            self.recorder.ok(handle, output)
        elif status == "fail":
            self.recorder.fail(handle)
        else:
            self.recorder.info(handle)
        self.stats.outcomes[(label, status)] += 1
        self.meta[handle] = {
            "node": reply.node,
            "http": reply.status,
            "title": reply.title or reply.error,
        }
        if status == "info":  # when the client gave up (the history says only "unknown")
            self.meta[handle]["gave_up"] = time.monotonic()

    # -------------------------------------------------------------- operations
    async def read(self, client: int | str, base: str, ns: str, level: str) -> tuple[Status, Any]:
        key = self.key_of(ns)
        handle = self.recorder.invoke(client, "read", (key, level))
        path = f"api/v1/namespaces/{ns}/config/{ENTRY_KEY}?consistency={level}"
        reply = await self._send(client, "GET", base, path)
        status, output = read_outcome(reply)
        if reply.status == 404 and reply.title != "Configuration not found":
            self._anomaly(client, "GET", path, reply)
        self._record(handle, "read", status, output, reply, f"read:{level}")
        return status, output

    async def mutate(
        self,
        client: int | str,
        base: str,
        ns: str,
        kind: str,
        value: str | None = None,
        expected: int | None = None,
    ) -> tuple[Status, Any]:
        """A ``write``, ``cas`` (``expected`` None: create only) or ``delete`` of ``ns``'s key."""
        key = self.key_of(ns)
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        body: Any = None
        inp: tuple[Any, ...]
        if kind == "delete":
            method, inp = "DELETE", (key,)
        else:
            assert value is not None
            method, body = "PUT", {"value": value}
            self.written.add(value)
            if kind == "cas":
                inp = (key, expected, value)
                if expected is None:
                    headers["If-None-Match"] = "*"
                else:
                    headers["If-Match"] = f'"{expected}"'
            else:
                inp = (key, value)
        handle = self.recorder.invoke(client, kind, inp)
        path = f"api/v1/namespaces/{ns}/config/{ENTRY_KEY}"
        reply = await self._send(client, method, base, path, headers, body)
        status, output = write_outcome(kind, reply)
        odd_404 = reply.status == 404 and output is not False
        if odd_404 or (200 <= reply.status < 300 and status != "ok"):
            self._anomaly(client, method, path, reply)
        self._record(handle, kind, status, output, reply, kind)
        return status, output

    async def create_namespace(self, client: int | str, base: str, ns: str) -> bool:
        """PUT the namespace (recorded as ``create_namespace``, not checked); True if acked."""
        handle = self.recorder.invoke(client, "create_namespace", (ns,))
        reply = await self._send(
            client,
            "PUT",
            base,
            f"api/v1/namespaces/{ns}",
            {"Idempotency-Key": uuid.uuid4().hex},
            {"description": "confman verify workload"},
        )
        ok = reply.status in (200, 201)
        status: Status = "ok" if ok else write_outcome("write", reply)[0]
        self._record(handle, "create_namespace", status, None, reply, "create_namespace")
        return ok

    # -------------------------------------------------------------- lifecycle
    async def setup(self, deadline: float) -> None:
        """Create each slot's first namespace (retrying other nodes until ``deadline``)."""
        rng = random.Random(f"{self.cfg.seed}:setup")
        for slot in self.slots:
            ns = self.namespace(slot.index, 0)
            while not await self.create_namespace("setup", rng.choice(self.urls), ns):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not create namespace {ns} before the deadline")
                await asyncio.sleep(0.1)
            slot.generations.append(ns)

    async def _rotate(self, client: int | str, base: str, slot: Slot) -> None:
        slot.rotating = True
        try:
            ns = self.namespace(slot.index, slot.generation + 1)
            if await self.create_namespace(client, base, ns):
                slot.generation += 1
                slot.mutations = 0
                slot.generations.append(ns)
        finally:
            slot.rotating = False

    async def _client(self, cid: int, deadline: float) -> None:
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:client:{cid}")
        kinds = ["read", "write", "cas", "delete"]
        weights = [cfg.reads, cfg.writes, cfg.cas, cfg.deletes]
        levels = list(cfg.read_levels)
        level_weights = [cfg.read_levels[lv] for lv in levels]
        seen: dict[str, int | None] = {}  # ns -> last version this client saw (None: absent)
        interval = cfg.clients / cfg.rate if cfg.rate > 0 else 0.0
        next_at = time.monotonic() + rng.uniform(0, interval)
        n = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if interval:
                if next_at > now:
                    await asyncio.sleep(min(next_at, deadline) - now)
                    continue
                next_at = max(next_at + interval, now - interval)
            base = rng.choice(self.urls)
            slot = self.slots[rng.randrange(len(self.slots))]
            ns = self.namespace(slot.index, slot.generation)
            kind = rng.choices(kinds, weights)[0]
            if kind == "read":
                status, out = await self.read(cid, base, ns, rng.choices(levels, level_weights)[0])
                if status == "ok":
                    seen[ns] = None if out is None else out[1]
                continue
            if slot.mutations >= cfg.rotate_after and not slot.rotating:
                await self._rotate(cid, base, slot)
                continue
            slot.mutations += 1
            n += 1
            value = f"c{cid}-{n}"
            if kind == "cas" and ns in seen:
                status, out = await self.mutate(cid, base, ns, "cas", value, seen[ns])
            elif kind == "delete":
                status, out = await self.mutate(cid, base, ns, "delete")
                if status == "ok":
                    seen[ns] = None
                continue
            else:  # a write, or a CAS before this client has seen the key
                status, out = await self.mutate(cid, base, ns, "write", value)
            if status == "ok" and isinstance(out, int) and not isinstance(out, bool):
                seen[ns] = out

    async def run(
        self,
        duration: float,
        setup_timeout: float = 30.0,
        started: threading.Event | None = None,
    ) -> None:
        """Set up the namespaces, set ``started``, then run every client for ``duration`` s."""
        async with make_session() as session:
            self._session = session
            try:
                if not any(s.generations for s in self.slots):
                    await self.setup(time.monotonic() + setup_timeout)
                deadline = time.monotonic() + duration
                if started is not None:
                    started.set()
                await asyncio.gather(*(self._client(i, deadline) for i in range(self.cfg.clients)))
            finally:
                self._session = None

    async def final_reads(self, level: str = "linearizable", attempts: int = 5) -> list[str]:
        """Read every key of every generation from every node (recorded as client ``final``);
        the reads that never succeeded, as ``node key: outcome`` lines."""
        failures: list[str] = []
        async with make_session() as session:
            self._session = session
            try:
                for base in self.urls:
                    for ns in self.namespaces():
                        status: Status = "info"
                        for _ in range(attempts):
                            status, _out = await self.read("final", base, ns, level)
                            if status == "ok":
                                break
                        if status != "ok":
                            failures.append(f"{base} {self.key_of(ns)}: {status}")
            finally:
                self._session = None
        return failures


def run_in_thread(coro_fn: Any, *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``coro_fn(*args)`` in a new event loop on a daemon thread; (thread, errors)."""
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(coro_fn(*args))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    t = threading.Thread(target=main, name="verify-workload", daemon=True)
    t.start()
    return t, errors


__all__ = [
    "CHECKED_LEVELS",
    "DEFINITE_503",
    "DOCUMENTED_5XX",
    "ENTRY_KEY",
    "MAX_REDIRECTS",
    "READ_LEVELS",
    "Reply",
    "Workload",
    "WorkloadConfig",
    "WorkloadStats",
    "make_session",
    "read_outcome",
    "run_in_thread",
    "send",
    "write_outcome",
]
