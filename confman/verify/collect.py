"""After a verify run's workload: `settle` the cluster, `collect_state` of every node, and
`cleanup` the run's namespaces from an existing cluster."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from confman.verify.checks import AUDIT_PAGE

__all__ = ["cleanup", "collect_state", "settle"]


def _statuses(http: httpx.Client, urls: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for u in urls:
        try:
            r = http.get(u + "health/ready", timeout=1.0)
            out[u] = r.json()
        except (httpx.HTTPError, ValueError):
            out[u] = None
    return out


def settle(http: httpx.Client, urls: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Wait until every node is ready under one leader and has applied the highest commit
    index seen one poll earlier (so writes of other clients cannot keep it waiting);
    (that index, "") or (None, what was seen last)."""
    deadline = time.monotonic() + timeout
    target: int | None = None
    while True:
        sts = _statuses(http, urls)
        cl = {u: ((s or {}).get("cluster") or {}) for u, s in sts.items()}
        leaders = {c.get("leader") for c in cl.values()}
        ready = all(s is not None and s.get("status") == "ready" for s in sts.values())
        if ready and len(leaders) == 1:
            applied = min(int(c.get("appliedIndex") or 0) for c in cl.values())
            if target is not None and applied >= target:
                return target, ""
            target = max(int(c.get("commitIndex") or 0) for c in cl.values())
        else:
            target = None
        if time.monotonic() >= deadline:
            return None, "; ".join(
                f"{u} {(s or {}).get('status', 'no answer')} role={c.get('role')} "
                f"term={c.get('term')} leader={c.get('leader')} commit={c.get('commitIndex')} "
                f"applied={c.get('appliedIndex')}"
                for (u, s), c in zip(sts.items(), cl.values(), strict=True)
            )
        time.sleep(0.1)


def collect_state(
    http: httpx.Client, url: str, api_key: str, min_index: int, prefix: str
) -> dict[str, Any]:
    """A node's namespaces, entries and the audits of the run's namespaces (at min_index)."""
    h = {"X-Api-Key": api_key}
    q = f"minIndex={min_index}"
    try:

        def get(path: str) -> Any:
            r = http.get(f"{url}{path}{'&' if '?' in path else '?'}{q}", headers=h, timeout=10.0)
            r.raise_for_status()
            return r.json()

        mine = [n for n in get("api/v1/namespaces") if n["path"].startswith(prefix + "-")]
        configs = [e for e in get("api/v1/configs") if e["namespace"].startswith(prefix + "-")]
        audits = {
            n["path"]: get(f"api/v1/namespaces/{n['path']}/audit?limit={AUDIT_PAGE}") for n in mine
        }
        return {"namespaces": mine, "configs": configs, "audits": audits, "error": None}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return {"namespaces": [], "configs": [], "audits": {}, "error": f"{exc!r}"[:300]}


def cleanup(
    http: httpx.Client, urls: Sequence[str], api_key: str, namespaces: Sequence[str]
) -> None:
    """Delete the run's namespaces from an existing cluster (best effort, via any node)."""
    for ns in namespaces:
        for url in urls:
            try:
                r = http.delete(
                    f"{url}api/v1/namespaces/{ns}",
                    headers={"X-Api-Key": api_key},
                    follow_redirects=True,
                    timeout=5.0,
                )
            except httpx.HTTPError:
                continue
            if r.status_code in (204, 404):
                break
