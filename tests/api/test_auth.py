"""Unit tests of the key store and grants: constant-time lookup over every key, roles, scopes."""

from __future__ import annotations

import hmac

import pytest

from confman.api import auth
from confman.api.auth import ADMIN, EDITOR, VIEWER, KeyStore, Principal
from confman.node.config import ApiKey, hash_key


def store(*keys: tuple[str, tuple[str, ...], tuple[str, ...]]) -> KeyStore:
    return KeyStore(
        ApiKey(f"k{i}", hash_key(k), roles, ns) for i, (k, roles, ns) in enumerate(keys)
    )


def test_lookup_finds_the_key_and_compares_against_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = store(*[(f"secret-{i}", ("viewer",), ("*",)) for i in range(10)])
    calls = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    principal = keys.lookup("secret-0")  # the first key: no early exit
    assert principal is not None and principal.name == "k0"
    assert len(calls) == 10
    calls.clear()
    assert keys.lookup("secret-x") is None and len(calls) == 10


def test_roles_map_to_levels() -> None:
    keys = store(
        ("v", ("viewer",), ("*",)),
        ("e", ("editor",), ("*",)),
        ("p", ("publisher",), ("*",)),
        ("a", ("admin",), ("*",)),
        ("ve", ("viewer", "editor"), ("*",)),
    )
    levels = {k: keys.lookup(k).level for k in ("v", "e", "p", "a", "ve")}  # type: ignore[union-attr]
    assert levels == {"v": VIEWER, "e": EDITOR, "p": EDITOR, "a": ADMIN, "ve": EDITOR}


def test_unknown_roles_are_refused_not_silently_denied() -> None:
    with pytest.raises(ValueError, match="reader"):
        store(("r", ("reader",), ("*",)))


@pytest.mark.parametrize(
    ("grants", "namespace", "ok"),
    [
        (("*",), "anything", True),
        (("team",), "team", True),
        (("team",), "team/app", True),
        (("team",), "teamx", False),
        (("team",), "tea", False),
        (("team/app",), "team", False),
        (("a", "b"), "b", True),
        ((), "a", False),
    ],
)
def test_grants(grants: tuple[str, ...], namespace: str, ok: bool) -> None:
    assert Principal("p", VIEWER, grants).may_access(namespace) is ok


def test_key_hashing_handles_any_header_bytes() -> None:
    keys = store(("ключ", ("viewer",), ("*",)))
    raw = "ключ".encode().decode("utf-8", "surrogateescape")
    assert keys.lookup(raw) is not None
    assert keys.lookup("\udcff\udcfe") is None  # undecodable bytes, as aiohttp passes them
