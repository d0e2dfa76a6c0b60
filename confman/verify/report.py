"""The report of a verify run: summary text, history, faults, states, logs, timeline SVG.

Directory layout::

    summary.txt       what `confman verify` prints, plus every check's details
    result.json       configuration, counters, faults and verdicts, machine-readable
    history.jsonl     one operation a line (`confman.verify.history.read_jsonl` reads it),
                      with the answering node, HTTP status and problem title added
    nemesis.jsonl     the faults as injected (monotonic times, as in the history)
    states/<node>.json  every node's final namespaces, entries and audits
    logs/<node>.log   node logs (fresh clusters only)
    timeline.svg      one row per client, a bar per operation coloured by outcome, faults
                      shaded; operations on a key found not linearizable are outlined
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from confman.verify.cluster import ProcessCluster
from confman.verify.outcome import RunResult

COLOURS = {"ok": "#2e9e44", "fail": "#d62728", "info": "#f0a020"}
FAULT_COLOURS = {
    "kill": "#d62728",
    "pause": "#9467bd",
    "partition": "#1f77b4",
    "crash": "#000000",
}


def _label(op_kind: str, inp: Any) -> str:
    return f"read:{inp[1]}" if op_kind == "read" else op_kind


def summary_text(r: RunResult, details: bool = False) -> str:
    """The run in a few lines (``details``: every check's details too)."""
    cfg = r.config
    span = max(r.ended - r.started, 1e-9)
    lines = [
        f"confman verify: seed {cfg.seed}, nemesis {cfg.nemesis or 'none'}, "
        f"{cfg.duration:g} s, {cfg.clients} clients, {cfg.keys} keys",
        (
            f"cluster: {len(r.urls)} fresh nodes" + (f" (bugs: {cfg.bugs})" if cfg.bugs else "")
            if not cfg.targets
            else f"cluster: existing, {', '.join(r.urls)}"
        ),
    ]
    main = [op for op in r.history if op.client_id not in ("final", "setup")]
    lines.append(f"operations: {len(main)} in {span:.1f} s ({len(main) / span:.0f}/s)")
    counts: Counter[tuple[str, str]] = Counter(
        (_label(op.kind, op.input), op.status) for op in main
    )
    kinds = sorted({k for k, _ in counts})
    lines.append(f"  {'kind':<20}{'ok':>8}{'fail':>8}{'info':>8}")
    for k in kinds:
        lines.append(f"  {k:<20}" + "".join(f"{counts[(k, s)]:>8}" for s in ("ok", "fail", "info")))
    http = ", ".join(
        f"{s} {t}: {n}".replace("  ", " ") for (s, t), n in sorted(r.stats.http.items()) if s != 200
    )
    lines.append(f"http (besides 200): {http or 'none'}; redirects followed: {r.stats.redirects}")
    faults = [e for e in r.events if e.name != "crash"]
    lines.append(f"faults injected: {len(faults)}")
    for e in r.events:
        end = f"+{e.end - r.started:.1f}s" if e.end is not None else "?"
        err = f"  [{e.error.splitlines()[0][:80]}]" if e.error and e.name != "crash" else ""
        lines.append(f"  +{e.start - r.started:.1f}s..{end}  {e.description}{err}")
    lines.append("verdicts:")
    for v in r.verdicts:
        lines.append(f"  {v.label:<8}{v.name:<14}{v.summary}")
        if details and v.details:
            lines.extend("      " + ln for ln in v.details.splitlines())
        elif v.ok is False and v.details:
            shown = v.details.splitlines()
            lines.extend("      " + ln for ln in shown[:25])
            if len(shown) > 25:
                lines.append(f"      ... ({len(shown) - 25} more lines in summary.txt)")
    word = {0: "VALID", 1: "INVALID", 2: "INCONCLUSIVE"}[r.exit_code]
    lines.append(f"result: {word}" + (f" (report: {r.report_dir})" if r.report_dir else ""))
    return "\n".join(lines)


def write_report(r: RunResult, out: Path, cluster: ProcessCluster | None = None) -> None:
    """Write every file of the report directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text(summary_text(r, details=True) + "\n", encoding="utf-8")
    with (out / "history.jsonl").open("w", encoding="utf-8") as f:
        for i, op in enumerate(r.history):
            doc = op.to_json()
            doc.update(r.meta.get(i, {}))
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
    with (out / "nemesis.jsonl").open("w", encoding="utf-8") as f:
        for e in r.events:
            f.write(json.dumps(e.to_json(), separators=(",", ":")) + "\n")
    cfg = r.config
    doc = {
        "config": {
            k: getattr(cfg, k)
            for k in (
                "duration",
                "nemesis",
                "seed",
                "nodes",
                "clients",
                "keys",
                "targets",
                "bugs",
                "timeout",
                "rate",
            )
        },
        "urls": r.urls,
        "started": r.started,
        "ended": r.ended,
        "stats": r.stats.to_json(),
        "planned_faults": [{"start": f.start, "end": f.end, "label": f.label()} for f in r.faults],
        "verdicts": [
            {"name": v.name, "ok": v.ok, "summary": v.summary, "details": v.details}
            for v in r.verdicts
        ],
        "exit_code": r.exit_code,
    }
    (out / "result.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    states = out / "states"
    states.mkdir(exist_ok=True)
    for i, (url, st) in enumerate(r.states.items()):
        name = cluster.node_of_url(url) if cluster else None
        (states / f"{name or f'node{i + 1}'}.json").write_text(
            json.dumps({"url": url, **st}, indent=1) + "\n", encoding="utf-8"
        )
    if cluster is not None:
        logs = out / "logs"
        logs.mkdir(exist_ok=True)
        for nid in cluster.ids:
            src = cluster.node(nid).log_path
            if src.exists():
                shutil.copyfile(src, logs / f"{nid}.log")
    (out / "timeline.svg").write_text(timeline_svg(r), encoding="utf-8")


def timeline_svg(r: RunResult, width: int = 1600) -> str:
    """The history as an SVG picture: a strip of faults on top, then a row per client with a
    bar per operation from call to return (an indeterminate one until the client gave up)."""
    ops = r.history
    clients = sorted(
        {op.client_id for op in ops},
        key=lambda c: (isinstance(c, str), c if isinstance(c, int) else 0, str(c)),
    )
    row_of = {c: i for i, c in enumerate(clients)}
    t0 = r.started
    gave_up = {i: m["gave_up"] for i, m in r.meta.items() if "gave_up" in m}
    end: float = max([r.ended, t0 + 1e-3, *gave_up.values()] + [op.ret or op.call for op in ops])
    for e in r.events:
        end = max(end, e.end or e.start)
    left, strip_y, strip_h, row_h = 90, 26, 16, 16
    top = strip_y + strip_h + 6
    plot_w = width - left - 20
    plot_h = row_h * len(clients)
    height = top + plot_h + 60
    scale = plot_w / (end - t0)

    def x(t: float) -> float:
        return left + (t - t0) * scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">{escape(_title(r))}</text>',
        f'<text x="{left - 6}" y="{strip_y + strip_h - 4}" text-anchor="end">nemesis</text>',
    ]
    shades = []
    for e in r.events:
        colour = FAULT_COLOURS.get(e.name.split(":")[0].split("+")[0], "#7f7f7f")
        x0 = x(e.start)
        w = max(x(e.end if e.end is not None else end) - x0, 2.0)
        tip = escape(f"{e.description} [{e.start - t0:.2f}, {(e.end or end) - t0:.2f}]")
        label = escape(e.description[: max(0, int(w / 5.5))])
        parts.append(
            f'<rect x="{x0:.1f}" y="{strip_y}" width="{w:.1f}" height="{strip_h}" '
            f'fill="{colour}" fill-opacity="0.8"><title>{tip}</title></rect>'
            f'<text x="{x0 + 2:.1f}" y="{strip_y + strip_h - 4}" fill="white" font-size="9">'
            f"{label}</text>"
        )
        shades.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{plot_h}" fill="{colour}" '
            f'fill-opacity="0.10" pointer-events="none"/>'
        )
    for c, i in row_of.items():
        y = top + i * row_h
        if i % 2:
            parts.append(
                f'<rect x="{left}" y="{y}" width="{plot_w}" height="{row_h}" fill="#000" '
                'fill-opacity="0.03"/>'
            )
        parts.append(f'<text x="{left - 6}" y="{y + row_h - 4}" text-anchor="end">{c}</text>')
    bad = set(r.bad_keys)
    timeout = r.config.timeout
    for i, op in enumerate(ops):
        y = top + row_of[op.client_id] * row_h
        ret = op.ret if op.ret is not None else gave_up.get(i, min(op.call + timeout, end))
        x0, w = x(op.call), max((ret - op.call) * scale, 1.0)
        is_read = op.kind == "read"
        h = row_h - 8 if is_read else row_h - 3
        yy = y + (row_h - h) / 2
        outline = ' stroke="black" stroke-width="1"' if op.input and op.input[0] in bad else ""
        tip = f"{op.kind} {op.input} -> {op.output if op.status == 'ok' else op.status}"
        tip += f" [{op.call - t0:.3f}, {'?' if op.ret is None else f'{op.ret - t0:.3f}'}]"
        node = r.meta.get(i, {}).get("node")
        tip += f" {node}" if node else ""
        parts.append(
            f'<rect x="{x0:.1f}" y="{yy:.1f}" width="{w:.1f}" height="{h}" '
            f'fill="{COLOURS[op.status]}" fill-opacity="{0.55 if is_read else 0.9}"{outline}>'
            f"<title>{escape(tip)}</title></rect>"
        )
    parts.extend(shades)
    axis_y = top + plot_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>'
    )
    span = end - t0
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if span / s <= 20)
    t = 0.0
    while t <= span:
        xt = x(t0 + t)
        parts.append(
            f'<line x1="{xt:.1f}" y1="{axis_y}" x2="{xt:.1f}" y2="{axis_y + 4}" stroke="#333"/>'
            f'<text x="{xt:.1f}" y="{axis_y + 15}" text-anchor="middle">{t:g}s</text>'
        )
        t += step
    ly = axis_y + 40
    lx = left
    legend = [(COLOURS[s], s) for s in ("ok", "fail", "info")]
    legend += [(c, k) for k, c in FAULT_COLOURS.items()]
    for colour, text in legend:
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="12" height="10" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{ly}">{escape(text)}</text>'
        )
        lx += 80
    parts.append(
        f'<text x="{lx}" y="{ly}">thin bars: reads; info bars end where the client gave up; '
        "outlined: key not linearizable; fault times shaded</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _title(r: RunResult) -> str:
    cfg = r.config
    verdict = {0: "valid", 1: "INVALID", 2: "inconclusive"}[r.exit_code]
    return (
        f"confman verify seed {cfg.seed}, nemesis {cfg.nemesis or 'none'}, "
        f"{len(r.history)} operations: {verdict}"
    )


__all__ = ["summary_text", "timeline_svg", "write_report"]
