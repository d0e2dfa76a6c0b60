"""The HTTP API (v1) of a Confman node: ``create_app(runtime)`` and ``serve(runtime)``.

The contract is ``/work/shared/API.md``; ``openapi.json`` (hand-written) describes exactly
what these modules do. Decisions where API.md is silent:

- Names (``ns``, ``key``): 1-128 of ``A-Za-z0-9._-`` and not ``.``/``..`` (URL
  normalisation would rewrite them); any path segment reaches the handler, which answers
  400 naming the field. Names only ever become SQL parameters, never file paths.
- ``GET .../{ns}/config`` of a missing namespace is 404; ``GET .../{ns}/audit`` never is
  (history outlives its namespace).
- JSON bodies: UTF-8 objects, no duplicate keys; unknown members are ignored (as the
  original did), known ones are type-checked. ``type`` absent or null means ``string``.
- ``ETag`` only for entries (namespaces have no version); a 204 carries no ETag.
- ``If-Match``: one strong tag or ``*``; ``If-None-Match`` on PUT: only ``*``; on GET:
  any tags (weak comparison) → 304. Idempotency key reused for another request → 422.
- ``consistency=lease`` falls back to ReadIndex while the leader holds no lease; read
  waits (ReadIndex, ``minIndex``) are bounded by min(5 s, replication timeout) → 504.
- A write on a follower is redirected before its body is read; auth comes first.
"""

from confman.api.app import HttpServer, create_app, serve
from confman.api.logs import configure_logging

__all__ = ["HttpServer", "configure_logging", "create_app", "serve"]
