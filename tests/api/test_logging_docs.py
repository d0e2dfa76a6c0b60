"""Structured access/error logs with the correlation id; the docs page and its assets."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest

from confman.api.logs import JsonFormatter, TextFormatter, configure_logging
from confman.api.routes_health import DOCS_FILES
from tests.api.harness import headers
from tests.api.spec import CheckedClient


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "confman.api.access"]


def test_access_log_is_one_json_object_per_line(
    api: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="confman.api.access"):
        api.get("/api/v1/configs?x=1", headers={**headers("viewer"), "X-Correlation-Id": "log-1"})
    record = next(r for r in access_records(caplog) if r.fields["correlationId"] == "log-1")  # type: ignore[attr-defined]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["logger"] == "confman.api.access" and doc["level"] == "info"
    assert doc["method"] == "GET" and doc["path"] == "/api/v1/configs?x=1"
    assert doc["status"] == 200 and doc["actor"] == "viewer key"
    assert doc["correlationId"] == "log-1" and doc["durationMs"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["ts"])


def test_text_format_for_people(api: CheckedClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="confman.api.access"):
        api.get("/nowhere", headers={"X-Correlation-Id": "log-2"})
    record = next(r for r in access_records(caplog) if r.fields["correlationId"] == "log-2")  # type: ignore[attr-defined]
    line = TextFormatter().format(record)
    assert " INFO confman.api.access GET /nowhere 404 " in line
    assert "correlationId=log-2" in line and "status=404" in line


def test_error_records_carry_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("confman.api").makeRecord(
            "confman.api",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            exc_info=sys.exc_info(),
        )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "failed" and "ValueError: boom" in doc["exc"]


def test_configure_logging_formats_the_whole_process() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream)
        logging.getLogger("confman.node").info("node %s started", "n1")
        configure_logging("warning", "text", stream)
        logging.getLogger("confman.node").info("hidden")
        logging.getLogger("confman.node").warning("shown")
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["msg"] == "node n1 started"
    assert second.endswith("WARNING confman.node shown")


# -- docs --------------------------------------------------------------------------------


def test_docs_page_uses_only_shipped_assets(api: CheckedClient) -> None:
    r = api.get("/docs")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith("/docs/") for ref in refs)  # nothing from a CDN
    for ref in refs:
        asset = api.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 100, ref


@pytest.mark.parametrize("name", sorted(DOCS_FILES))
def test_docs_files(api: CheckedClient, name: str) -> None:
    r = api.get(f"/docs/{name}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == DOCS_FILES[name]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_licence_is_shipped(api: CheckedClient) -> None:
    assert "Apache License" in api.get("/docs/LICENSE").text
    assert "SmartBear" in api.get("/docs/NOTICE").text


@pytest.mark.parametrize("name", ["README.md", "docs.html", "swagger-ui.css.map", "x"])
def test_other_files_are_not_served(api: CheckedClient, name: str) -> None:
    assert api.get(f"/docs/{name}").status_code == 404
