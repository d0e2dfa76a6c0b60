"""benchmarks.compare: wrk output parsing, merging, medians, bars, report shape, Lua scripts.

Fast tests need no cluster; the wrk tests run wrk for a second against a stub HTTP server in
this process (skipped without wrk). The end-to-end ``--quick`` run is marked slow.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare import __main__ as cli
from benchmarks.compare.drivers import Workload, wrk_command
from benchmarks.compare.results import (
    MARKER,
    Run,
    evaluate_bars,
    median_records,
    merge,
    parse_wrk,
    percentile_hist,
    ratio,
    row_key,
    split_connections,
    storage_bars,
    table,
)
from benchmarks.compare.systems import LUA_DIR, b64, key_name, value_of

ROOT = Path(__file__).resolve().parents[2]

WRK_OUT = (
    "Running 1s test @ http://127.0.0.1:1\n  1 threads and 2 connections\n"
    + MARKER
    + json.dumps(
        {
            "requests": 110,
            "duration_us": 2_000_000,
            "bytes": 1,
            "errors": {"connect": 0, "read": 2, "write": 0, "status": 10, "timeout": 1},
            "non2xx": {"503": 10},
            "hist": {"100": 50, "200": 40, "5000": 20},
        }
    )
    + "\nRequests/sec: 55\n"
)


def test_parse_wrk_counts_only_2xx_as_success_and_keeps_the_histogram() -> None:
    run = parse_wrk(WRK_OUT)
    assert run.ok == 100 and run.rate == pytest.approx(50.0)
    assert run.errors == {"status 503": 10, "read": 2, "timeout": 1}
    assert run.error_count == 13
    assert run.hist == {100: 50, 200: 40, 5000: 20}
    assert run.pct_ms(50) == pytest.approx(0.2) and run.pct_ms(100) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no @@COMPARE"):
        parse_wrk("Running 1s test\nRequests/sec: 1\n")


def test_percentiles_are_nearest_rank() -> None:
    h = {v: 1 for v in range(1, 101)}
    assert percentile_hist(h, 50) == 50 and percentile_hist(h, 99) == 99
    assert percentile_hist(h, 100) == 100 and percentile_hist(h, 0) == 1
    assert math.isnan(percentile_hist({}, 50))


def test_merge_adds_rates_errors_and_histograms_exactly() -> None:
    a = Run(100, 50.0, {"status 503": 1}, {10: 99, 1000: 1}, 2.0)
    b = Run(300, 150.0, {"status 503": 2, "timeout": 1}, {10: 1, 20: 299}, 2.1)
    m = merge([a, b])
    assert m.ok == 400 and m.rate == pytest.approx(200.0) and m.seconds == 2.1
    assert m.errors == {"status 503": 3, "timeout": 1}
    assert m.hist == {10: 100, 20: 299, 1000: 1}
    # p50 of the union, not an average of the parts' p50s (10 and 20)
    assert m.pct_ms(50) == pytest.approx(0.020)
    with pytest.raises(ValueError):
        merge([])


def test_connections_are_split_evenly_leader_first() -> None:
    assert split_connections(10, 3) == [4, 3, 3]
    assert split_connections(1, 3) == [1, 0, 0]
    assert split_connections(64, 3) == [22, 21, 21]
    assert sum(split_connections(256, 3)) == 256


def test_median_records_and_ratio() -> None:
    recs = [
        {"rps": 10.0, "p50_ms": 1.0, "p95_ms": 2, "p99_ms": 3, "max_ms": 9, "errors": {"x": 1}},
        {"rps": 30.0, "p50_ms": 5.0, "p95_ms": 2, "p99_ms": 3, "max_ms": 9, "errors": {"x": 2}},
        {"rps": 20.0, "p50_ms": 2.0, "p95_ms": 2, "p99_ms": 3, "max_ms": 9, "errors": {}},
    ]
    m = median_records(recs)
    assert m["rps"] == 20.0 and m["p50_ms"] == 2.0 and m["errors"] == {"x": 3}
    assert m["runs"] == 3
    assert ratio(3.0, 2.0) == 1.5 and ratio(1.0, 0) is None and ratio(None, 1.0) is None


def _medians(**ratios: float) -> dict[str, dict[str, dict[str, Any]]]:
    def row(c: float, e: float, field: str = "rps") -> dict[str, dict[str, Any]]:
        return {"confman": {field: c}, "etcd": {field: e}}

    return {
        row_key("write", 64): row(ratios["write"], 1.0),
        row_key("read-local", 64): row(ratios["local"], 1.0),
        row_key("read-linearizable", 64): row(ratios["lin"], 1.0),
        row_key("write", 1): row(ratios["p50"], 1.0, "p50_ms"),
    }


def test_bars_pass_and_fail_at_their_thresholds() -> None:
    fo = {"confman": {"p50_s": 0.3}, "etcd": {"p50_s": 1.1}}
    mem = {"confman": {"max_kib": 100}, "etcd": {"max_kib": 100}}
    bars = evaluate_bars(_medians(write=1.0, local=2.0, lin=1.0, p50=1.0), fo, mem)
    assert [b.verdict for b in bars] == ["PASS"] * 6
    fo_bad = {"confman": {"p50_s": 0.4}, "etcd": {"p50_s": 0.3}}  # <= 0.5 s but not below etcd
    mem_bad = {"confman": {"max_kib": 101}, "etcd": {"max_kib": 100}}
    bars = evaluate_bars(_medians(write=0.99, local=1.99, lin=0.5, p50=1.01), fo_bad, mem_bad)
    assert [b.verdict for b in bars] == ["FAIL"] * 6
    bars = evaluate_bars({}, None, None)
    assert [b.verdict for b in bars] == ["n/a"] * 6


def test_table_marks_the_bar_rows() -> None:
    med = _medians(write=2.0, local=1.0, lin=1.0, p50=1.0)
    text = table([("write", 64), ("read-local", 64), ("mixed", 10)], med, evaluate_bars(med))
    lines = text.splitlines()
    write_row = next(ln for ln in lines if ln.startswith("write "))
    assert "2.00" in write_row and "PASS" in write_row
    local_row = next(ln for ln in lines if ln.startswith("read-local "))
    assert "FAIL" in local_row
    mixed_row = next(ln for ln in lines if ln.startswith("mixed "))
    assert "PASS" not in mixed_row and "FAIL" not in mixed_row


def test_report_json_shape() -> None:
    args = cli.finish_args(cli.parser().parse_args(["--quick", "--driver", "python"]))
    rows = cli.plan(args)
    assert [(w.name, c) for w, c in rows][:3] == [("write", 1), ("write", 64), ("read-local", 1)]
    assert ("write-10u", 10) in [(w.name, c) for w, c in rows]
    assert ("open-write", "1000/s") in [(w.name, c) for w, c in rows]
    rec = {
        "workload": "write",
        "clients": 1,
        "repeat": 0,
        "driver": "python",
        **Run(5, 2.5, {}, {1000: 5}, 2.0).summary(),
    }
    raw = [{**rec, "system": "confman"}, {**rec, "system": "etcd", "p50_ms": 2.0}]
    report = cli.build_report(args, {"cores": 2}, rows, raw, {}, {})
    json.dumps(report)  # serialisable
    assert set(report) >= {"args", "machine", "rows", "medians", "bars", "runs", "tables"}
    assert report["medians"]["python"]["write@1"]["confman"]["p50_ms"] == 1.0
    bar = next(b for b in report["bars"]["python"] if b["name"] == "write-1-p50")
    assert bar["value"] == 0.5 and bar["verdict"] == "PASS"
    assert "write" in report["tables"]["python"]


def test_cli_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit):
        cli.finish_args(cli.parser().parse_args(["--only", "nope"]))
    with pytest.raises(SystemExit):
        cli.finish_args(cli.parser().parse_args(["--keys", "50"]))
    with pytest.raises(SystemExit):
        cli.finish_args(cli.parser().parse_args(["--driver", "ab"]))


def test_help_documents_every_flag_and_workload() -> None:
    text = cli.parser().format_help()
    for flag in (
        "--only",
        "--clients",
        "--seconds",
        "--repeat",
        "--driver",
        "--systems",
        "--skip-failover",
        "--skip-memory",
        "--quick",
        "--value-size",
        "--keys",
    ):
        assert flag in text
    for name in cli.workloads(1000):
        assert name in text


def test_python_requests_match_the_lua_key_and_value_scheme() -> None:
    assert key_name(7) == "k000007"
    v = value_of(7, 1024)
    assert len(v) == 1024 and v.startswith("k000007-")
    assert b64("k000001") == "azAwMDAwMQ=="


# ------------------------------------------------------------------- wrk + Lua, real
class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.seen.append((self.command, self.path, body))
        status = 503 if len(self.seen) % 5 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_PUT = do_POST = _any

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    _Recorder.seen = []
    _Recorder.protocol_version = "HTTP/1.1"
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _wrk(url: str, script: str, wl: Workload, extra: list[str]) -> str:
    cmd = wrk_command(str(LUA_DIR / script), url, 2, 1, 1, wl, 5, 300, 1, extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")


@needs_wrk
def test_etcd_lua_sends_base64_keys_and_values(stub: str) -> None:
    out = _wrk(stub, "etcd.lua", Workload("m", "mixed"), ["read=serializable"])
    run = parse_wrk(out)
    seen = _Recorder.seen
    assert run.ok + run.errors.get("status 503", 0) >= len(seen) - 2 > 10
    assert run.errors.get("status 503", 0) >= 1  # non-2xx counted as errors
    puts = [json.loads(b) for m, p, b in seen if p == "/v3/kv/put"]
    ranges = [json.loads(b) for m, p, b in seen if p == "/v3/kv/range"]
    assert puts and ranges and all(m == "POST" for m, _, _ in seen)
    for put in puts:
        key = base64.b64decode(put["key"], validate=True).decode()
        assert key in {key_name(i) for i in range(5)}
        assert base64.b64decode(put["value"], validate=True).decode() == value_of(int(key[1:]), 300)
    for r in ranges:
        assert r["serializable"] is True
        assert base64.b64decode(r["key"], validate=True).decode().startswith("k00000")
    # a padding case: base64 of every length mod 3 round-trips (keys are 7 bytes: "=")
    assert puts[0]["key"].endswith("=")


@needs_wrk
def test_confman_lua_sends_the_rest_shape(stub: str) -> None:
    wl = Workload("m", "mixed", "linearizable")
    out = _wrk(stub, "confman.lua", wl, ["ns=bench", "apikey=K", "read=linearizable", "forward=1"])
    assert parse_wrk(out).ok > 0
    seen = _Recorder.seen
    gets = [p for m, p, _ in seen if m == "GET"]
    puts = [(p, b) for m, p, b in seen if m == "PUT"]
    assert gets and puts
    assert all(p.startswith("/api/v1/namespaces/bench/config/k00000") for p in gets)
    assert all(p.endswith("?consistency=linearizable") for p in gets)
    assert all(p.endswith("?forward=true") for p, _ in puts)
    assert all(len(json.loads(b)["value"]) == 300 for _, b in puts)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.compare",
        "--quick",
        "--clients",
        "64",
        "--only",
        "write,read-local,read-linearizable,open-read",
        "--out",
        str(tmp_path),
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "bars (issue 8):" in p.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    systems = {r["system"] for r in report["runs"]}
    assert systems == {"confman", "etcd"}
    assert all(r["ok"] > 0 for r in report["runs"]), report["runs"]
    assert report["failover"]["confman"]["p50_s"] > 0 and report["memory"]["etcd"]["max_kib"] > 0
    assert (tmp_path / "table.txt").exists()


def test_chart_without_matplotlib_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    msg = cli.chart(tmp_path / "c.png", [("write", "1")], {"wrk": {}}, "wrk")
    assert "matplotlib is missing" in msg and ".[bench]" in msg
    assert not (tmp_path / "c.png").exists()


def test_storage_bars_pass_and_fail_at_their_thresholds() -> None:
    def med(write: float, p50: float, p99: float, open_p50: float) -> dict[str, Any]:
        return {
            row_key("write", 64): {"confman": {"rps": write}, "etcd": {"rps": 1.0}},
            row_key("write", 1): {
                "confman": {"p50_ms": p50, "p99_ms": p99},
                "etcd": {"p50_ms": 1.0, "p99_ms": 1.0},
            },
            "open-write@1000/s": {"confman": {"p50_ms": open_p50}, "etcd": {"p50_ms": 1.0}},
        }

    assert [b.verdict for b in storage_bars(med(0.9, 1.5, 2.0, 1.5))] == ["PASS"] * 4
    assert [b.verdict for b in storage_bars(med(0.89, 1.51, 2.01, 1.51))] == ["FAIL"] * 4
    assert [b.verdict for b in storage_bars({})] == ["n/a"] * 4
    text = table([("write", 64)], med(1.0, 1.0, 1.0, 1.0), [], storage_bars(med(1.0, 1, 1, 1)))
    assert "bars (issue 16, storage):" in text
