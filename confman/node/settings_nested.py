"""The keys of the tables that ``confman.node.config_checks`` reads by hand (TLS, members,
API keys, the cluster secret file), declared once as `Key`s in `NESTED`; `allowed_keys`
tells the loader which keys a table may hold (its settings from ``settings.SETTINGS``,
these, and its sub-tables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from confman.node.settings import SECTIONS, SETTINGS
from confman.node.settings_types import ROLES


# ---------------------------------------------------------------------------------- nested
@dataclass(frozen=True, slots=True)
class Key:
    """A key of a nested table, read by hand in ``confman.node.config_checks``."""

    name: str
    type: str
    default: str  # "required", or the default as the docs show it
    doc: str
    example: object = None


#: The keys of the hand-read tables (and ``cluster_secret_file`` at the top level).
NESTED: Final[Mapping[str, tuple[Key, ...]]] = {
    "": (
        Key(
            "cluster_secret_file",
            "path",
            "-",
            "a file holding the cluster secret, instead of cluster_secret",
        ),
    ),
    "http.tls": (
        Key(
            "cert_file",
            "path",
            "required",
            "the API's certificate chain (PEM); reloaded with key_file on SIGHUP",
            "/etc/confman/node.pem",
        ),
        Key("key_file", "path", "required", "its private key (PEM)", "/etc/confman/node.key"),
        Key(
            "client_ca_file",
            "path",
            "-",
            "require client certificates signed by this CA (mTLS)",
            "/etc/confman/clients.pem",
        ),
    ),
    "raft.tls": (
        Key(
            "cert_file",
            "path",
            "required",
            "this node's certificate, signed by ca_file",
            "/etc/confman/peer.pem",
        ),
        Key("key_file", "path", "required", "its private key", "/etc/confman/peer.key"),
        Key(
            "ca_file",
            "path",
            "required",
            "the CA that signs every node's certificate",
            "/etc/confman/peer-ca.pem",
        ),
        Key(
            "check_hostname",
            "boolean",
            "true",
            "a peer's certificate must name the address dialled",
            True,
        ),
    ),
    "members": (
        Key("id", "string", "required", "the member's node_id", "node1"),
        Key("raft", '"host:port"', "required", "its peer (Raft) address", "127.0.0.1:7100"),
        Key("http", "http(s) URL", "required", "its HTTP API", "http://127.0.0.1:6100/"),
    ),
    "api_keys": (
        Key(
            "name",
            "string",
            "required",
            "who holds the key (logged with each request)",
            "Operations",
        ),
        Key(
            "key_sha256",
            "64 hex characters",
            "required",
            "the key's SHA-256 (see `confman "
            "keys hash`); the published dev keys are refused outside the dev profile",
            "0" * 64,
        ),
        Key("key", "string", "-", "the key in plain text: dev profile only, instead of key_sha256"),
        Key("roles", "array of strings", "required", "of " + ", ".join(ROLES), ["admin"]),
        Key(
            "namespaces",
            "array of strings",
            '["*"]',
            "the namespaces it may touch; * for all",
            ["*"],
        ),
    ),
}


def allowed_keys(section: str) -> set[str]:
    """The keys a table may hold: its settings, its nested keys and its sub-tables."""
    keys = {s.name for s in SETTINGS if s.section == section}
    keys |= {k.name for k in NESTED.get(section, ())}
    if section == "":
        keys |= set(SECTIONS)
    return keys
