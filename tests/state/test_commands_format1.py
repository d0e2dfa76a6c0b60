"""Log entries and idempotency keys written by the msgpack command codec stay valid.

``fixtures/commands_format1.json`` holds the bytes the msgpack codec (before the msgspec
port) produced for ``make_commands_format1.cases()``: they must decode to equal commands,
today's encoder must write the same bytes, and ``request_fingerprint`` must be unchanged
(stored idempotency keys are compared with the fingerprint of a retry).
"""

from __future__ import annotations

import json

import pytest

from confman.node.state.commands import (
    Request,
    decode_command,
    decode_request,
    encode_command,
    encode_request,
    request_fingerprint,
)
from tests.state.fixtures.make_commands_format1 import FIXTURE, cases

CASES = cases()
ROWS: dict[str, dict[str, str]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


def test_the_fixture_covers_every_case() -> None:
    assert sorted(ROWS) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_1_bytes_decode_to_equal_commands(name: str) -> None:
    req, row = CASES[name], ROWS[name]
    decoded = decode_request(bytes.fromhex(row["request"]))
    assert decoded == req
    assert type(decoded) is Request and type(decoded.command) is type(req.command)
    assert decode_command(bytes.fromhex(row["command"])) == req.command


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoders_write_the_format_1_bytes(name: str) -> None:
    req, row = CASES[name], ROWS[name]
    assert encode_request(req).hex() == row["request"]
    assert encode_command(req.command).hex() == row["command"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_fingerprint_is_unchanged(name: str) -> None:
    assert request_fingerprint(CASES[name]).hex() == ROWS[name]["fingerprint"]
