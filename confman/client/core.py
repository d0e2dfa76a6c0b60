"""Every API operation as a plan (see ``plan``), shared by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any, Literal, cast
from urllib.parse import quote

import httpx

from confman.client.models import AuditEvent, ChangePage, Entry, Namespace, NodeStatus, WatchEvent
from confman.client.plan import (
    Call,
    Endpoints,
    Plan,
    Reply,
    Send,
    discover_leader,
    exchange,
    raise_for,
)

Consistency = Literal["local", "linearizable", "lease"]
#: The local dev cluster (``confman dev``).
DEFAULT_ENDPOINTS = "http://127.0.0.1:6100,http://127.0.0.1:6200,http://127.0.0.1:6300"
API_KEY_ENV = "CONFMAN_API_KEY"
#: Slack added to a long poll's ``wait`` for the HTTP read timeout.
_POLL_SLACK_S = 10.0


def _seg(name: str) -> str:
    return quote(name, safe="")


def _entry_path(namespace: str, key: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/config/{_seg(key)}"


def _index(reply: httpx.Response) -> int | None:
    raw = reply.headers.get("x-confman-index")
    return int(raw) if raw and raw.isdigit() else None


def _etag(version: int | Literal["*"]) -> str:
    if version == "*":
        return "*"
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"if_match must be a version (int >= 0) or '*', not {version!r}")
    return f'"{version}"'


def _checked(reply: httpx.Response) -> httpx.Response:
    if reply.status_code >= 400:
        raise raise_for(reply)
    return reply


class ClientCore:
    """Settings, endpoints and the operations; the drivers only move bytes and sleep."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None,
        api_key: str | None,
        *,
        retry_timeout: float,
        idempotent_writes: bool,
        forward_writes: bool,
        session_reads: bool = True,
    ) -> None:
        self.endpoints = Endpoints.parse(endpoints or DEFAULT_ENDPOINTS)
        self.session_reads = session_reads
        #: The highest log index this client has written or read: with ``session_reads``,
        #: reads wait for it (``minIndex``), so they see the client's own writes and never go
        #: back in time when they move to another node.
        self.session_index = 0
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.retry_timeout = retry_timeout
        self.idempotent_writes = idempotent_writes
        self.forward_writes = forward_writes

    def headers(self) -> dict[str, str]:
        """The headers of every request (the API key is not one: see ``auth``)."""
        from confman import __version__

        return {"User-Agent": f"confman-client/{__version__}", "Accept": "application/json"}

    def auth(self, url: str) -> dict[str, str]:
        """The API key header for a request to ``url``: none unless ``url`` is a configured
        endpoint or an advertised member (the plans never send anywhere else)."""
        if self.api_key and self.endpoints.trusted(url):
            return {"X-Api-Key": self.api_key}
        return {}

    # -- building blocks ----------------------------------------------------------------
    def _read(
        self,
        path: str,
        consistency: Consistency | None = None,
        min_index: int | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Plan[httpx.Response]:
        query = dict(params or {})
        if consistency is not None:
            query["consistency"] = consistency
        if min_index is None and self.session_reads and self.session_index:
            min_index = self.session_index
        if min_index is not None:
            query["minIndex"] = str(min_index)
        call = Call("GET", path, query or None, timeout=timeout, leader=consistency == "lease")
        reply = yield from exchange(self.endpoints, call, self.retry_timeout)
        return self._seen(_checked(reply))

    def _seen(self, reply: httpx.Response) -> httpx.Response:
        index = _index(reply)
        if index is not None and index > self.session_index:
            self.session_index = index
        return reply

    def _write(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Plan[httpx.Response]:
        h = dict(headers or {})
        key = idempotency_key or (str(uuid.uuid4()) if self.idempotent_writes else None)
        if key is not None:
            h["Idempotency-Key"] = key
        params = {"forward": "true"} if self.forward_writes else None
        call = Call(
            method, path, params, h, body, write=True, safe_to_resend=key is not None, leader=True
        )
        reply = yield from exchange(self.endpoints, call, self.retry_timeout)
        return self._seen(_checked(reply))

    # -- cluster ------------------------------------------------------------------------
    def leader(self) -> Plan[str | None]:
        """The leader's URL (asked afresh), or None."""
        self.endpoints.leader = yield from discover_leader(self.endpoints)
        return self.endpoints.leader

    def cluster_status(self) -> Plan[list[NodeStatus]]:
        out: list[NodeStatus] = []
        for url in self.endpoints.urls:
            step = Send("GET", url + "/health/ready", timeout=2.0)
            reply = cast(Reply, (yield step))  # a Send is answered with its Reply
            if isinstance(reply, httpx.TransportError):
                out.append(NodeStatus(url, False, error=f"{type(reply).__name__}: {reply}"))
                continue
            try:
                body = reply.json()
                self.endpoints.learn(url, body)
                out.append(NodeStatus.from_json(url, body))
            except (ValueError, AttributeError):
                out.append(NodeStatus(url, False, error=f"HTTP {reply.status_code}"))
        return out

    # -- namespaces ---------------------------------------------------------------------
    def namespaces(self, consistency: Consistency | None = None) -> Plan[list[Namespace]]:
        reply = yield from self._read("/api/v1/namespaces", consistency)
        return [Namespace.from_json(n) for n in reply.json()]

    def namespace(self, namespace: str, consistency: Consistency | None = None) -> Plan[Namespace]:
        reply = yield from self._read(f"/api/v1/namespaces/{_seg(namespace)}", consistency)
        return Namespace.from_json(reply.json())

    def put_namespace(
        self, namespace: str, description: str | None, owner: str | None, key: str | None
    ) -> Plan[Namespace]:
        body = {"description": description, "owner": owner}
        path = f"/api/v1/namespaces/{_seg(namespace)}"
        reply = yield from self._write("PUT", path, body, idempotency_key=key)
        return Namespace.from_json(reply.json())

    def delete_namespace(self, namespace: str, key: str | None) -> Plan[int | None]:
        path = f"/api/v1/namespaces/{_seg(namespace)}"
        reply = yield from self._write("DELETE", path, idempotency_key=key)
        return _index(reply)

    def audit(
        self, namespace: str, limit: int, consistency: Consistency | None
    ) -> Plan[list[AuditEvent]]:
        path = f"/api/v1/namespaces/{_seg(namespace)}/audit"
        reply = yield from self._read(path, consistency, params={"limit": str(limit)})
        return [AuditEvent.from_json(e) for e in reply.json()]

    # -- entries ------------------------------------------------------------------------
    def get(
        self, namespace: str, key: str, consistency: Consistency | None, min_index: int | None
    ) -> Plan[Entry]:
        reply = yield from self._read(_entry_path(namespace, key), consistency, min_index)
        return Entry.from_json(reply.json(), _index(reply))

    def entries(
        self, namespace: str | None, consistency: Consistency | None, min_index: int | None
    ) -> Plan[list[Entry]]:
        path = (
            "/api/v1/configs"
            if namespace is None
            else f"/api/v1/namespaces/{_seg(namespace)}/config"
        )
        reply = yield from self._read(path, consistency, min_index)
        index = _index(reply)
        return [Entry.from_json(e, index) for e in reply.json()]

    def put(
        self,
        namespace: str,
        key: str,
        value: str,
        type_: str | None,
        if_match: int | Literal["*"] | None,
        create_only: bool,
        idempotency_key: str | None,
    ) -> Plan[Entry]:
        headers: dict[str, str] = {}
        if if_match is not None:
            headers["If-Match"] = _etag(if_match)
        if create_only:
            headers["If-None-Match"] = "*"
        body: dict[str, Any] = {"value": value}
        if type_ is not None:
            body["type"] = type_
        path = _entry_path(namespace, key)
        reply = yield from self._write("PUT", path, body, headers, idempotency_key)
        return Entry.from_json(reply.json(), _index(reply))

    def delete(
        self,
        namespace: str,
        key: str,
        if_match: int | Literal["*"] | None,
        idempotency_key: str | None,
    ) -> Plan[int | None]:
        headers = {} if if_match is None else {"If-Match": _etag(if_match)}
        path = _entry_path(namespace, key)
        reply = yield from self._write("DELETE", path, None, headers, idempotency_key)
        return _index(reply)

    # -- changes ------------------------------------------------------------------------
    def poll(
        self,
        namespace: str | None,
        key: str | None,
        prefix: str | None,
        since: int | None,
        wait: float | None,
    ) -> Plan[ChangePage]:
        params = watch_params(namespace, key, prefix)
        if since is not None:
            params["since"] = str(since)
        if wait:
            params["wait"] = f"{wait:g}s"
        timeout = (wait or 0) + _POLL_SLACK_S
        reply = yield from self._read("/api/v1/watch", params=params, timeout=timeout)
        doc = reply.json()
        return ChangePage(int(doc["index"]), [WatchEvent.from_json(e) for e in doc["events"]])


def watch_params(namespace: str | None, key: str | None, prefix: str | None) -> dict[str, str]:
    """The filter of a watch as query parameters."""
    params: dict[str, str] = {}
    if namespace is not None:
        params["namespace"] = namespace
    if key is not None:
        params["key"] = key
    if prefix is not None:
        params["prefix"] = prefix
    return params
