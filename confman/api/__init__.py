"""The HTTP API (v1) of a Confman node: ``create_app(runtime)`` and ``serve(runtime)``.

The reference for people is ``docs/api.md`` (the v1 contract, kept compatible with the
original service); ``openapi.json`` (hand-written) describes exactly what these modules do,
and ``tests/api/test_api_doc.py`` keeps the two equal. Decisions the v1 contract leaves open:

- Names (``ns``, ``key``): 1-128 of ``A-Za-z0-9._-`` and not ``.``/``..`` (URL
  normalisation would rewrite them); any path segment reaches the handler, which answers
  400 naming the field. Names only ever become SQL parameters, never file paths.
- ``GET .../{ns}/config`` of a missing namespace is 404; ``GET .../{ns}/audit`` never is
  (history outlives its namespace).
- JSON bodies: UTF-8 objects, no duplicate keys; unknown members are ignored (as the
  original did), known ones are type-checked. ``type`` absent or null means ``string``.
- ``ETag`` only for entries (namespaces have no version); a 204 carries no ETag.
- ``If-Match``: one strong tag or ``*``; both are checked when the write is applied (``*``
  as "must exist"), so a retry with the same Idempotency-Key is the same request.
  ``If-None-Match`` on PUT: only ``*``; on GET: any tags (weak comparison) → 304.
  Idempotency key reused for another request → 422.
- ``consistency=lease`` asks the lease first (which runs the node's clock, so a leader that
  was paused or cut off notices its lease ran out); a follower redirects (307); a leader
  without a valid lease (just elected, acks late) confirms with a ReadIndex round instead,
  never with stale data. Read waits (ReadIndex, ``minIndex``) are bounded by
  min(5 s, replication timeout) → 504.
- A write on a follower is redirected before its body is read; auth comes first. With
  ``?forward=true`` or ``http.forward_writes`` the follower proxies it to the leader instead
  (``forward.py``): never twice (``X-Confman-Forwarded-By``), following a moved leader a few
  hops, 503 when the leader cannot be reached (not applied) or does not answer (unknown).
- Watches (``watch.py``): SSE when ``Accept`` has ``text/event-stream``, otherwise a long
  poll (``wait``, default 0). No ``since``: from the answering node's applied index. The
  change history is the audit table; ``history.retention_*`` make the leader propose
  ``CompactHistory`` (``compaction.py``), so every node forgets the same rows; a ``since``
  below the compacted index → 410 with ``X-Confman-Compacted-Index``.
"""

from confman.api.app import HttpServer, create_app, serve
from confman.api.logs import configure_logging

__all__ = ["HttpServer", "configure_logging", "create_app", "serve"]
