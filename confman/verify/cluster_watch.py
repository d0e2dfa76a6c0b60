"""Observing a `ProcessCluster`: health and readiness, leaders, waiting helpers, node logs.

`ClusterWatch.wait_for` polls a predicate until it holds or a deadline passes; its error
names what was seen last and every node's state (`describe`), and a node that died raises
`NodeCrashed` at once. The log helpers leave out the harness's own health polls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from confman.verify.cluster_base import ClusterError, Node, NodeCrashed
from confman.verify.proxy import LinkProxy

__all__ = ["ClusterWatch"]

_T = TypeVar("_T")
_POLL_NOISE = re.compile(r"access: GET /health|\"path\": ?\"/health")


class ClusterWatch:
    """The observation methods of `ProcessCluster` (a mixin: it holds no state of its own)."""

    ids: list[str]
    nodes: dict[str, Node]
    links: dict[tuple[str, str], LinkProxy]
    http: httpx.Client

    if TYPE_CHECKING:

        def node(self, nid: str) -> Node: ...

        def url(self, nid: str) -> str: ...

        def node_of_url(self, url: str | None) -> str | None: ...

        def running(self) -> list[str]: ...

        def check_alive(self) -> None: ...

    def health(self, nid: str, timeout: float = 1.0) -> bool:
        """True if the node answers ``GET /health`` with 200."""
        try:
            return self.http.get(self.url(nid) + "health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self, nid: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """``GET /health/ready`` JSON (200 or 503 alike), or None if the node does not answer.

        The HTTP status is added as ``httpStatus``.
        """
        try:
            r = self.http.get(self.url(nid) + "health/ready", timeout=timeout)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        body["httpStatus"] = r.status_code
        return body

    def statuses(self, nodes: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """`status` of each node (default: every running, unpaused node)."""
        return {n: self.status(n) for n in (self.running() if nodes is None else nodes)}

    def leaders(self, nodes: Iterable[str] | None = None, *, ready: bool = True) -> dict[str, int]:
        """Nodes that report themselves leader (and ready, if asked), with their term."""
        out: dict[str, int] = {}
        for nid, st in self.statuses(nodes).items():
            c = (st or {}).get("cluster") or {}
            is_ready = st is not None and st.get("status") == "ready"
            if c.get("role") == "leader" and (is_ready or not ready):
                out[nid] = int(c.get("term", 0))
        return out

    def leader(self, nodes: Iterable[str] | None = None) -> str | None:
        """The ready leader with the highest term, or None."""
        ls = self.leaders(nodes)
        return max(ls, key=lambda n: ls[n]) if ls else None

    def describe(self) -> str:
        """One line per node: process state and readiness, for error messages."""
        lines = []
        for nid, node in self.nodes.items():
            if node.proc is None:
                state = "never started"
            elif node.proc.poll() is not None:
                state = f"exited({node.proc.returncode})"
            else:
                state = "paused" if node.paused else "running"
            st = self.status(nid, timeout=0.3) if state == "running" else None
            c = (st or {}).get("cluster") or {}
            lines.append(
                f"  {nid} [{state}] "
                + (
                    f"{st.get('status')} role={c.get('role')} term={c.get('term')} "
                    f"leader={self.node_of_url(c.get('leader'))} commit={c.get('commitIndex')} "
                    f"applied={c.get('appliedIndex')}"
                    if st
                    else "-"
                )
            )
        down = [f"{a}->{b}:{p.mode}" for (a, b), p in self.links.items() if p.mode != "pass"]
        if down:
            lines.append("  links not passing: " + ", ".join(down))
        return "\n".join(lines)

    def wait_for(
        self,
        predicate: Callable[[], _T | None],
        timeout: float = 10.0,
        interval: float = 0.05,
        what: str = "",
        *,
        check_alive: bool = True,
    ) -> _T:
        """Poll ``predicate`` until it returns a truthy value (returned), or raise on deadline.

        Exceptions from the predicate count as "not yet"; the error names the last value or
        exception, and the cluster state. Raises `NodeCrashed` at once if a node died.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        last_exc: BaseException | None = None
        while True:
            if check_alive:
                self.check_alive()
            try:
                value = predicate()
                last_exc = None
                if value:
                    return value
                last = value
            except (httpx.HTTPError, AssertionError, KeyError, ValueError, TypeError) as exc:
                if isinstance(exc, NodeCrashed):
                    raise
                last_exc = exc
            if time.monotonic() >= deadline:
                seen = f"{type(last_exc).__name__}: {last_exc}" if last_exc else repr(last)
                raise ClusterError(
                    f"timed out after {timeout:.1f}s waiting for {what or repr(predicate)}\n"
                    f"last observed: {seen}\ncluster:\n{self.describe()}"
                )
            time.sleep(interval)

    def wait_up(self, nid: str, timeout: float = 20.0) -> None:
        """Wait until the node's process answers ``GET /health``."""
        self.wait_for(lambda: self.health(nid, 0.5), timeout, 0.05, f"{nid} to answer /health")

    def wait_leader(
        self,
        nodes: Iterable[str] | None = None,
        timeout: float = 10.0,
        *,
        min_term: int = 0,
        not_: Iterable[str] = (),
    ) -> str:
        """Wait for a ready leader among ``nodes`` (default: running ones); its id."""
        group = None if nodes is None else list(nodes)
        excluded = set(not_)

        def found() -> str | None:
            ls = {
                n: t for n, t in self.leaders(group).items() if t >= min_term and n not in excluded
            }
            return max(ls, key=lambda n: ls[n]) if ls else None

        return self.wait_for(found, timeout, 0.02, "a ready leader")

    def wait_ready(self, nodes: Iterable[str] | None = None, timeout: float = 15.0) -> None:
        """Wait until every given node (default all) reports ``ready`` with the same leader."""
        group = list(nodes or self.ids)

        def ok() -> bool:
            sts = self.statuses(group)
            leaders = {((s or {}).get("cluster") or {}).get("leader") for s in sts.values()}
            return all(s and s["status"] == "ready" for s in sts.values()) and len(leaders) == 1

        self.wait_for(ok, timeout, 0.05, f"{', '.join(group)} ready with one leader")

    # ------------------------------------------------------------------ logs
    def log_tail(self, nid: str, lines: int = 60) -> str:
        """The last lines of the node's log, without the harness's own health polls."""
        try:
            text = self.node(nid).log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"--- {nid}: no log ---"
        kept = [ln for ln in text.splitlines() if not _POLL_NOISE.search(ln)]
        tail = kept[-lines:]
        return f"--- {nid} log (last {len(tail)} lines, health polls left out) ---\n" + "\n".join(
            tail
        )

    def logs(self, lines: int = 60) -> str:
        """The tail of every node's log."""
        return "\n".join(self.log_tail(n, lines) for n in self.ids)

    def grep_log(self, nid: str, needle: str) -> list[str]:
        """Lines of the node's log (all its runs) that contain ``needle``."""
        try:
            text = self.node(nid).log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if needle in ln]
