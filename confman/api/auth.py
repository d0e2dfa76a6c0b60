"""API keys: SHA-256 lookup in constant time, roles and namespace grants."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from confman.api.problems import Problem, bad_request
from confman.node.config import ApiKey

#: Role -> level; editor and publisher are equal (read + write configuration).
ROLE_LEVELS = {"viewer": 1, "editor": 2, "publisher": 2, "admin": 3}
VIEWER, EDITOR, ADMIN = 1, 2, 3
_LEVEL_NAMES = {VIEWER: "viewer", EDITOR: "editor", ADMIN: "admin"}
#: Longer keys are refused without hashing them.
MAX_KEY_BYTES = 1024
#: The name of the authenticated caller, kept on the request for the access log.
ACTOR = web.RequestKey("confman_actor", str)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind an API key."""

    name: str
    level: int
    grants: tuple[str, ...]

    @property
    def all_namespaces(self) -> bool:
        return "*" in self.grants

    def may_access(self, namespace: str) -> bool:
        """True when a grant covers ``namespace`` (``team`` covers ``team/...``)."""
        if self.all_namespaces:
            return True
        return any(namespace == g or namespace.startswith(g + "/") for g in self.grants)


class KeyStore:
    """The configured keys, by SHA-256 digest."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys: list[tuple[bytes, Principal]] = []
        for k in keys:
            unknown = [r for r in k.roles if r not in ROLE_LEVELS]
            if unknown:  # the config loader refuses these too; never silently deny
                raise ValueError(f"API key {k.name!r}: unknown role {unknown[0]!r}")
            level = max(ROLE_LEVELS[r] for r in k.roles)
            self._keys.append(
                (bytes.fromhex(k.key_sha256), Principal(k.name, level, tuple(k.namespaces)))
            )

    def lookup(self, presented: str) -> Principal | None:
        """The principal of ``presented``; compares against every key, no early exit."""
        return self.lookup_raw(presented.encode("utf-8", "surrogateescape"))

    def lookup_raw(self, raw: bytes) -> Principal | None:
        """``lookup`` of a key as the bytes it arrived as."""
        digest = hashlib.sha256(raw).digest()
        found: Principal | None = None
        for stored, principal in self._keys:
            if hmac.compare_digest(digest, stored) and found is None:
                found = principal
        return found


_CHALLENGE = {"WWW-Authenticate": 'ApiKey realm="confman", header="X-Api-Key"'}


def authenticate(request: web.Request, keys: KeyStore) -> Principal:
    """The caller of ``request``; 401 when the key is missing or unknown, 400 when the
    header is repeated (which copy would count is ambiguous between proxies and us)."""
    values = request.headers.getall("X-Api-Key", ())
    if len(values) > 1:
        raise bad_request("X-Api-Key", "send the header once, with one key")
    presented = values[0] if values else None
    if not presented:
        raise Problem(401, detail="Missing X-Api-Key header", headers=_CHALLENGE)
    principal = None if len(presented) > MAX_KEY_BYTES else keys.lookup(presented)
    if principal is None:
        raise Problem(401, detail="Unknown API key", headers=_CHALLENGE)
    request[ACTOR] = principal.name
    return principal


def require_level(principal: Principal, level: int) -> None:
    """403 unless ``principal`` has at least the role ``level``."""
    if principal.level < level:
        raise Problem(
            403,
            detail=f"API key {principal.name!r} lacks the {_LEVEL_NAMES[level]} role",
        )


def require_namespace(principal: Principal, namespace: str) -> None:
    """403 unless a grant of ``principal`` covers ``namespace``."""
    if not principal.may_access(namespace):
        raise Problem(
            403,
            detail=f"API key {principal.name!r} has no access to namespace {namespace!r}",
        )
