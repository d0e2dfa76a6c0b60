"""Python client of a Confman cluster, sync (``Client``) and asyncio (``AsyncClient``).

```python
from confman.client import Client, PreconditionFailed

with Client("http://10.0.0.1:6100,http://10.0.0.2:6100,http://10.0.0.3:6100") as c:
    entry = c.put("billing", "db.url", "postgres://db:5432")      # safe to retry
    c.get("billing", "db.url", consistency="linearizable")          # never stale
    try:
        c.put("billing", "db.url", "postgres://db2", if_match=entry.version)
    except PreconditionFailed:
        ...                                                         # someone else won
    for event in c.watch("billing", since=entry.index):              # resumes by itself
        print(event.type, event.key, event.value)
```
"""

from confman.client.aio import AsyncClient, AsyncWatch
from confman.client.core import API_KEY_ENV, DEFAULT_ENDPOINTS, Consistency
from confman.client.errors import (
    ApiError,
    BadRequest,
    ConfmanError,
    ConnectionFailed,
    Forbidden,
    HistoryCompacted,
    IdempotencyKeyReused,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    TimedOut,
    Unauthorized,
    Unavailable,
    UntrustedEndpoint,
)
from confman.client.models import (
    AuditEvent,
    ChangePage,
    Entry,
    Namespace,
    NodeStatus,
    WatchEvent,
)
from confman.client.sync import Client, Watch

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_ENDPOINTS",
    "ApiError",
    "AsyncClient",
    "AsyncWatch",
    "AuditEvent",
    "BadRequest",
    "ChangePage",
    "Client",
    "ConfmanError",
    "ConnectionFailed",
    "Consistency",
    "Entry",
    "Forbidden",
    "HistoryCompacted",
    "IdempotencyKeyReused",
    "Namespace",
    "NodeStatus",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServerError",
    "TimedOut",
    "Unauthorized",
    "Unavailable",
    "UntrustedEndpoint",
    "Watch",
    "WatchEvent",
]
