"""The Jepsen etcd log and kv EDN readers."""

from __future__ import annotations

import pytest

from confman.verify.checker import check
from confman.verify.history import Operation
from confman.verify.models import KeyValueModel, RegisterModel
from confman.verify.parsers import (
    TIMED_OUT,
    Keyword,
    load_jepsen_etcd,
    load_kv_edn,
    parse_edn,
    parse_jepsen_etcd,
    parse_kv_edn,
)
from tests.verify.helpers import TESTDATA

ETCD_LOG = """\
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:write\t4
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:ok\t:write\t4
INFO  jepsen.util - 2   :invoke :cas    [4 2]
INFO  jepsen.util - 2   :fail   :cas    [4 2]
INFO  jepsen.util - 3\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 4\t:invoke\t:read\tnil
INFO  jepsen.util - 4\t:fail\t:read\t:timed-out
INFO  jepsen.util - 3\t:info\t:cas\t:timed-out

INFO  jepsen.util - 8\t:invoke\t:write\t0
INFO  jepsen.util - 5\t:invoke\t:cas\t[0 3]
INFO  jepsen.util - 5\t:ok\t:cas\t[0 3]
"""


def test_etcd_events_become_operations() -> None:
    history = parse_jepsen_etcd(ETCD_LOG.splitlines())
    assert history == [
        Operation(0, "read", None, None, 1, 3, "ok"),
        Operation(1, "write", 4, None, 2, 4, "ok"),
        Operation(2, "cas", (4, 2), False, 5, 6, "ok"),  # :fail :cas = value differed
        Operation(3, "cas", (4, 1), None, 7, None, "info"),
        Operation(4, "read", None, None, 8, None, "info"),  # timed out: indeterminate
        Operation(8, "write", 0, None, 12, None, "info"),  # never completed
        Operation(5, "cas", (0, 3), True, 13, 14, "ok"),
    ]
    # the failed cas says the value was not 4 when it ran, after write(4) completed
    assert check(history, RegisterModel()).verdict == "not_linearizable"


def test_etcd_other_failures_did_not_happen() -> None:
    lines = [
        "INFO  jepsen.util - 1\t:invoke\t:write\t3",
        "INFO  jepsen.util - 1\t:fail\t:write\t3",
    ]
    assert parse_jepsen_etcd(lines) == [Operation(1, "write", 3, None, 1, 2, "fail")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["garbage"], "line 1: not a jepsen.util event"),
        (["INFO  jepsen.util - 1\t:ok\t:read\t3"], "without invocation"),
        (
            ["INFO  jepsen.util - 1\t:invoke\t:read\tnil"] * 2,
            "line 2: process 1 invokes twice",
        ),
        (
            ["INFO  jepsen.util - 1\t:invoke\t:read\tnil", "INFO  jepsen.util - 1\t:ok\t:write\t3"],
            "write completes a read",
        ),
        (
            ["INFO  jepsen.util - 1\t:invoke\t:read\tnil", "INFO jepsen.util - 1 :done :read 3"],
            "unknown event type",
        ),
    ],
)
def test_etcd_malformed(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jepsen_etcd(lines)


def test_etcd_file_counts() -> None:
    history = load_jepsen_etcd(TESTDATA / "jepsen-etcd" / "etcd_000.log")
    lines = (TESTDATA / "jepsen-etcd" / "etcd_000.log").read_text().splitlines()
    assert len(history) == sum(":invoke" in line for line in lines)
    assert {op.kind for op in history} == {"read", "write", "cas"}


KV_EDN = """\
{:process 0, :type :invoke, :f :put, :key "a", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "a", :value nil}
{:process 0, :type :ok, :f :put, :key "a", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "a", :value "x 0 0 y"}
{:process 2, :type :invoke, :f :append, :key "b", :value "q"}
{:process 2, :type :fail, :f :append, :key "b", :value "q"}
{:process 3, :type :invoke, :f :append, :key "b", :value "r"}
{:process 3, :type :info, :f :append, :key "b", :value "r"}
"""


def test_kv_events_become_operations() -> None:
    history = parse_kv_edn(KV_EDN.splitlines())
    assert history == [
        Operation(0, "put", ("a", "x 0 0 y"), None, 1, 3, "ok"),
        Operation(1, "get", ("a", None), "x 0 0 y", 2, 4, "ok"),
        Operation(2, "append", ("b", "q"), None, 5, 6, "fail"),
        Operation(3, "append", ("b", "r"), None, 7, None, "info"),
    ]
    assert check(history, KeyValueModel()).verdict == "linearizable"


INVOKE_GET = '{:process 0, :type :invoke, :f :get, :key "a", :value nil}'


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["[1 2]"], "line 1: expected an EDN map"),
        (["{:process 0, :type :invoke, :f :get}"], "missing or malformed field"),
        ([INVOKE_GET, '{:process 0, :type :done, :f :get, :key "a"}'], "unknown event type"),
        ([INVOKE_GET, '{:process 0, :type :ok, :f :put, :key "a"}'], "put completes a get"),
    ],
)
def test_kv_malformed(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_kv_edn(lines)


def test_kv_file_counts() -> None:
    history = load_kv_edn(TESTDATA / "kv" / "c10-ok.txt")
    lines = (TESTDATA / "kv" / "c10-ok.txt").read_text().splitlines()
    assert len(history) == sum(":type :invoke" in line for line in lines)
    assert all(op.status == "ok" for op in history)


def test_edn_values() -> None:
    assert parse_edn("nil") is None
    assert parse_edn("true") is True
    assert parse_edn(" -12 ") == -12
    assert parse_edn(":timed-out") == TIMED_OUT
    assert parse_edn('"a \\"b\\" \\\\ c\\n"') == 'a "b" \\ c\n'
    assert parse_edn("[1 [2 3] ()]") == (1, (2, 3), ())
    assert parse_edn('{:a 1, :b [nil "x"]}') == {Keyword("a"): 1, Keyword("b"): (None, "x")}
    assert repr(Keyword("f")) == ":f"


@pytest.mark.parametrize("text", ["[1 2", "{:a}", "[1 2)", "1 2", "1.5", "", '"open'])
def test_edn_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_edn(text)
