"""Link control of a `ProcessCluster`: cut, partition, isolate, bridge, heal, add latency.

Each direction of each peer link runs through its own `LinkProxy` (``links[(a, b)]``
carries a's connections to b), so every direction can be cut on its own. A cluster built
with ``proxies=False`` has no links: these methods then raise `ClusterError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from confman.verify.cluster_base import ClusterError, Node
from confman.verify.proxy import LinkProxy, Mode

__all__ = ["LinkControl"]


class LinkControl:
    """The link methods of `ProcessCluster` (a mixin: it holds no state of its own)."""

    ids: list[str]
    proxies: bool
    links: dict[tuple[str, str], LinkProxy]

    if TYPE_CHECKING:

        def node(self, nid: str) -> Node: ...

    def _need_proxies(self) -> None:
        if not self.proxies:
            raise ClusterError("this cluster was built with proxies=False: links cannot be cut")

    def set_link(self, a: str, b: str, mode: Mode, *, latency_ms: float | None = None) -> None:
        """Set the mode (and latency) of the directed link a → b."""
        self._need_proxies()
        self.links[(self.node(a).id, self.node(b).id)].set_mode(mode, latency_ms=latency_ms)

    def cut(self, a: str, b: str, mode: Mode = "drop") -> None:
        """Cut one direction: a's connections to b."""
        self.set_link(a, b, mode)

    def partition(
        self, group_a: Iterable[str], group_b: Iterable[str] | None = None, mode: Mode = "drop"
    ) -> None:
        """Cut every link between the groups, both ways (``group_b`` defaults to the rest)."""
        ga = list(group_a)
        gb = [n for n in self.ids if n not in ga] if group_b is None else list(group_b)
        for a in ga:
            for b in gb:
                self.set_link(a, b, mode)
                self.set_link(b, a, mode)

    def isolate(self, nid: str, mode: Mode = "drop") -> None:
        """Cut the node off from every other node, both ways."""
        self.partition([nid], mode=mode)

    def bridge(
        self,
        group_a: Iterable[str] | None = None,
        middle: str | None = None,
        group_b: Iterable[str] | None = None,
    ) -> None:
        """Two halves that cannot talk, joined only through ``middle``, which sees both.

        Defaults split the nodes in order: ``node1,node2 | node3 | node4,node5`` for five.
        """
        ids = list(self.ids)
        mid = middle or ids[len(ids) // 2]
        rest = [n for n in ids if n != mid]
        ga = list(group_a) if group_a is not None else rest[: len(rest) // 2]
        gb = list(group_b) if group_b is not None else [n for n in rest if n not in ga]
        self.heal()
        self.partition(ga, gb)

    def heal(self) -> None:
        """Every link back to ``pass`` without added latency."""
        for p in self.links.values():
            p.set_mode("pass", latency_ms=0, jitter_ms=0)

    def latency(self, ms: float, links: Iterable[tuple[str, str]] | None = None) -> None:
        """Add latency to the given links (default all), keeping their mode."""
        self._need_proxies()
        for key in links or list(self.links):
            p = self.links[key]
            p.set_mode(p.mode, latency_ms=ms)
