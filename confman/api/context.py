"""What the handlers share: the runtime they serve, the key store, settings and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from confman.api.auth import KeyStore
from confman.api.node_runtime import NodeRuntime

if TYPE_CHECKING:
    from confman.api.changes import ChangeHub
    from confman.api.forward import Forwarder

#: Longest a read waits for ReadIndex or ``minIndex`` before answering 504.
READ_WAIT_MAX_S = 5.0


class HttpMetrics:
    """Request counts and latencies, in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "confman_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "confman_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 15.0),
            registry=self.registry,
        )


@dataclass(slots=True)
class ApiContext:
    """Shared by every handler of one app."""

    rt: NodeRuntime
    keys: KeyStore
    max_body: int
    idempotency_ttl_s: int
    read_wait_s: float
    metrics: HttpMetrics
    cors_origins: frozenset[str]
    forward_writes: bool = False
    #: Set while the app runs (started on startup, closed on shutdown).
    hub: ChangeHub | None = None
    forwarder: Forwarder | None = None
    background: list[Any] = field(default_factory=list)


CONTEXT = web.AppKey("confman_api_context", ApiContext)
