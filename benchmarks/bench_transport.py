"""Peer transport throughput and latency over loopback, with and without uvloop.

Run: ``.venv/bin/python -m benchmarks.bench_transport [--rounds 3] [--appends 20000] [--tls]``

Node ``a`` (this process) talks to node ``b`` (a child process, same loop kind), both full
``PeerTransport``s with authentication (and frame MACs where the transport has them; with
``--tls``, mutual TLS from a throwaway ``trustme`` CA as well). ``b`` answers every APPEND
with an APPEND_RESP and every HEARTBEAT with a HEARTBEAT_RESP, as a follower would.

- pipelined: ``a`` keeps up to 256 appends in flight (etcd's default window) and sends the
  next one as each response arrives; messages/s = appends / time to the last response.
  Workloads: 64 entries of 300 B per append (~20 KB encoded); one 4 KiB entry per append;
  heartbeats (~30 B, the per-message overhead).
- ping-pong: one heartbeat at a time; round-trip time p50/p99.
- cpu: CPU time of both processes together per message exchanged (the message and its
  response), in µs, for each pipelined workload. On a shared machine this moves less than
  the rates, which suffer whenever another process takes a core.
- framing (``--framing``, in this process, best of 7): per frame, the receiver's parse
  without and with the MAC check, and the sender's tag; what the MAC adds is their sum.

Each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

from confman.node.codec import encode_message
from confman.node.transport import PeerTransport
from confman.raft.types import Entry, Message, MessageType

SECRET = b"benchmark secret, 32 bytes long.."
HOST = "127.0.0.1"
WINDOW = 256


def _factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    return uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop


def _tls_kwargs(tls_dir: str | None, node_id: str) -> dict[str, Any]:
    """``tls=`` for a transport, from the files ``_make_pki`` wrote (nothing without TLS)."""
    if tls_dir is None:
        return {}
    from confman.node.peer_tls import PeerTLS, load_contexts

    d = Path(tls_dir)
    files = PeerTLS(d / f"{node_id}.pem", d / f"{node_id}.key", d / "ca.pem")
    return {"tls": load_contexts(files)}


def _make_pki(d: Path) -> None:
    import trustme  # a dev dependency, needed for --tls only

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for node in ("a", "b"):
        cert = ca.issue_cert(HOST, node)
        cert.private_key_pem.write_to_path(str(d / f"{node}.key"))
        for i, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(str(d / f"{node}.pem"), append=i > 0)


def _transport(
    node_id: str, on_message: Callable[[Message], None], tls_dir: str | None = None
) -> PeerTransport:
    def no_sink(_m: Message, _n: int) -> Any:
        raise RuntimeError("no snapshots in this benchmark")

    return PeerTransport(
        node_id,
        SECRET,
        (HOST, 0),
        {},
        on_message,
        lambda _peer: None,
        lambda _m: None,
        no_sink,
        lambda _peer, _ok: None,
        queue_limit=100_000,
        **_tls_kwargs(tls_dir, node_id),
    )


# -- the follower (child process) ------------------------------------------------------------
def _follower_main(kind: str, conn: Connection, tls_dir: str | None) -> None:
    async def main() -> None:
        replies = {
            MessageType.APPEND: MessageType.APPEND_RESP,
            MessageType.HEARTBEAT: MessageType.HEARTBEAT_RESP,
        }

        def on_message(m: Message) -> None:
            t.send([Message(replies[m.type], to=m.frm, frm="b", term=m.term, index=m.index)])

        t = _transport("b", on_message, tls_dir)
        await t.start()
        conn.send(t.port)
        loop = asyncio.get_running_loop()
        t.update_peers({"a": (HOST, await loop.run_in_executor(None, conn.recv))})
        conn.send("ready")  # a is a member now: it may dial
        with contextlib.suppress(EOFError):
            while await loop.run_in_executor(None, conn.recv) == "cpu":  # until "stop"
                conn.send(time.process_time())
        await t.stop()

    with asyncio.Runner(loop_factory=_factory(kind)) as runner:
        runner.run(main())


# -- the leader (this process) ---------------------------------------------------------------
class Leader:
    def __init__(self, tls_dir: str | None) -> None:
        self.t = _transport("a", self.on_message, tls_dir)
        self.waiter: asyncio.Future[None] | None = None
        self.pending: list[Message] = []
        self.remaining = 0

    def on_message(self, m: Message) -> None:
        if self.remaining:  # pipelined: keep the window full
            self.remaining -= 1
            if self.pending:
                self.t.send([self.pending.pop()])
            if self.remaining:
                return
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def pipelined(self, msgs: list[Message]) -> float:
        """Messages per second with a window of ``WINDOW`` in flight."""
        self.pending = list(reversed(msgs))
        self.remaining = len(msgs)
        self.waiter = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        self.t.send([self.pending.pop() for _ in range(min(WINDOW, len(msgs)))])
        async with asyncio.timeout(120):  # a lost message would hang the benchmark
            await self.waiter
        return len(msgs) / (time.perf_counter() - start)

    async def ping_pong(self, count: int) -> list[float]:
        """Round-trip times in microseconds."""
        rtts = []
        loop = asyncio.get_running_loop()
        for i in range(count):
            self.waiter = loop.create_future()
            start = time.perf_counter()
            self.t.send([Message(MessageType.HEARTBEAT, to="b", frm="a", term=1, commit=i)])
            async with asyncio.timeout(10):
                await self.waiter
            rtts.append((time.perf_counter() - start) * 1e6)
        return rtts


def appends(count: int, entries: int, size: int) -> list[Message]:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    return [
        Message(
            MessageType.APPEND,
            to="b",
            frm="a",
            term=1,
            index=i * entries,
            log_term=1,
            commit=i * entries,
            entries=tuple(Entry(1, i * entries + j + 1, data=data) for j in range(entries)),
        )
        for i in range(count)
    ]


def bench_loop(
    kind: str, rounds: int, n_appends: int, pings: int, tls_dir: str | None = None
) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_follower_main, args=(kind, child, tls_dir), daemon=True)
    proc.start()
    big = appends(n_appends, 64, 300)
    small = appends(n_appends * 2, 1, 4096)
    beats = [
        Message(MessageType.HEARTBEAT, to="b", frm="a", term=1, commit=i)
        for i in range(n_appends * 5)
    ]

    def cpu() -> float:
        """CPU seconds used so far by both processes."""
        parent.send("cpu")
        return time.process_time() + float(parent.recv())

    async def timed(leader: Leader, msgs: list[Message], cpu_key: str) -> float:
        before = cpu()
        rate = await leader.pipelined(msgs)
        out[cpu_key].append((cpu() - before) / len(msgs) * 1e6)
        return rate

    out: dict[str, list[float]] = {
        k: []
        for k in ("append64", "append4k", "heartbeat", "p50", "p99", "cpu64", "cpu4k", "cpuhb")
    }

    async def main() -> dict[str, list[float]]:
        leader = Leader(tls_dir)
        await leader.t.start()
        leader.t.update_peers({"b": (HOST, parent.recv())})
        parent.send(leader.t.port)
        assert parent.recv() == "ready"
        try:
            await leader.pipelined(big[:500])  # warm up: connections, caches
            await leader.ping_pong(200)
            for _ in range(rounds):
                out["append64"].append(await timed(leader, big, "cpu64"))
                out["append4k"].append(await timed(leader, small, "cpu4k"))
                out["heartbeat"].append(await timed(leader, beats, "cpuhb"))
                rtts = sorted(await leader.ping_pong(pings))
                out["p50"].append(rtts[len(rtts) // 2])
                out["p99"].append(rtts[int(len(rtts) * 0.99)])
        finally:
            parent.send("stop")
            await leader.t.stop()
        return out

    with asyncio.Runner(loop_factory=_factory(kind)) as runner:
        raw = runner.run(main())
    proc.join(10)
    return {k: statistics.median(v) for k, v in raw.items()}


def framing_costs(repeats: int = 7, n: int = 2000) -> None:
    """Per-frame framing CPU with and without the MAC, for each workload's message."""
    import os
    import timeit
    from functools import partial

    from confman.node.framing import HEADER, K_MSG, TAG_BYTES, FramedProtocol, FrameMac

    key = os.urandom(32)
    heartbeat = Message(MessageType.HEARTBEAT, to="b", frm="a", term=1, commit=7)
    cases = [("heartbeat", heartbeat), ("append4k", appends(1, 1, 4096)[0])]
    cases.append(("append64", appends(1, 64, 300)[0]))
    print(f"framing per frame, µs (best of {repeats} x {n} frames)")
    print(
        f"{'message':<10} {'bytes':>6} {'parse':>7} {'parse+check':>12} {'tag':>6} {'MAC adds':>9}"
    )

    async def measure() -> None:
        for name, msg in cases:
            payload = encode_message(msg)
            plain = (HEADER.pack(len(payload) + 1, K_MSG) + payload) * n
            tx = FrameMac(key)
            tagged = b"".join(
                HEADER.pack(len(payload) + 1 + TAG_BYTES, K_MSG) + payload + tx.tag(K_MSG, payload)
                for _ in range(n)
            )

            def parse(buf: bytes, mac: bool) -> None:
                p = FramedProtocol(1 << 26)
                p.frame_received = lambda _k, _v: None
                p.rx_mac = FrameMac(key) if mac else None
                assert p._parse(buf) == len(buf) and not p.closing

            def tag(payload: bytes = payload) -> None:
                t = FrameMac(key).tag
                for _ in range(n):
                    t(K_MSG, payload)

            runs = (partial(parse, plain, False), partial(parse, tagged, True), tag)
            best = [min(timeit.repeat(fn, number=1, repeat=repeats)) / n * 1e6 for fn in runs]
            added = best[1] - best[0] + best[2]
            print(
                f"{name:<10} {len(payload):>6} {best[0]:>7.2f} {best[1]:>12.2f} "
                f"{best[2]:>6.2f} {added:>9.2f}"
            )

    asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--pings", type=int, default=5_000)
    parser.add_argument("--tls", action="store_true", help="mutual TLS on the link")
    parser.add_argument("--framing", action="store_true", help="only the framing costs")
    args = parser.parse_args()
    if args.framing:
        framing_costs()
        return
    if args.tls and "tls" not in inspect.signature(PeerTransport).parameters:
        parser.error("this PeerTransport has no TLS")
    size64 = len(encode_message(appends(1, 64, 300)[0]))
    size4k = len(encode_message(appends(1, 1, 4096)[0]))
    print(
        f"peer transport over loopback{' with mutual TLS' if args.tls else ''}, median of "
        f"{args.rounds} rounds; append64 = 64 x 300 B entries ({size64} B encoded), "
        f"append4k = one 4 KiB entry ({size4k} B), window {WINDOW}; cpu = µs of CPU per "
        "message and its response, both processes"
    )
    header = (
        f"{'loop':<8} {'append64 msg/s':>15} {'MB/s':>6} {'cpu':>6} {'append4k msg/s':>15} "
        f"{'MB/s':>6} {'cpu':>6} {'heartbeat msg/s':>16} {'cpu':>6} "
        f"{'rtt p50 µs':>11} {'rtt p99 µs':>11}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="confman-bench-tls-") as tmp:
        if args.tls:
            _make_pki(Path(tmp))
        for kind in ("asyncio", "uvloop"):
            r = bench_loop(kind, args.rounds, args.appends, args.pings, tmp if args.tls else None)
            print(
                f"{kind:<8} {r['append64']:>15,.0f} {r['append64'] * size64 / 1e6:>6.1f} "
                f"{r['cpu64']:>6.1f} {r['append4k']:>15,.0f} "
                f"{r['append4k'] * size4k / 1e6:>6.1f} {r['cpu4k']:>6.1f} "
                f"{r['heartbeat']:>16,.0f} {r['cpuhb']:>6.1f} "
                f"{r['p50']:>11.1f} {r['p99']:>11.1f}"
            )


if __name__ == "__main__":
    main()
