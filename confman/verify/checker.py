"""Linearizability checking: Wing & Gong's search with Lowe's just-in-time linearization.

Per partition of the history (see `Model.partition`), the call and return events are put in
one time-ordered doubly linked list. The search walks it: at a call it tries to linearize
that operation now (the model accepts it, and the pair (set of linearized operations, state)
has not been seen before), removing the operation's events from the list; at a return whose
operation is still pending it backtracks, since that operation should already have taken
effect. Linearized sets are int bitsets and states are hashable, so the memo is one set.

Indeterminate operations have no return event: they may be linearized anywhere after their
call, and the search succeeds once every determinate operation is linearized (the remaining
indeterminate ones are then placed last, which is the same as never: models accept an
unknown outcome in every state). Failed operations (known not to have happened) and
indeterminate reads are dropped before the search.

Pruning: an operation that never changes the state (`Model.is_pure`: a read, a cas that did
not apply) and is possible now can be moved to the front of any continuation, so once the
continuations through it fail, the node fails without trying its siblings. An indeterminate
operation is tried only after the determinate ones, and never where it would change nothing
(taking it out of a linearization there leaves a linearization).
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confman.verify.history import UNKNOWN, History, Operation
from confman.verify.models import Model, State

Verdict = Literal["linearizable", "not_linearizable", "unknown"]
LINEARIZABLE: Verdict = "linearizable"
NOT_LINEARIZABLE: Verdict = "not_linearizable"
UNKNOWN_VERDICT: Verdict = "unknown"

DEFAULT_TIMEOUT = 10.0
"""Seconds one `check` may search before answering `unknown` (None: no limit)."""

_SLICE = 4096  # search steps a partition runs before the next one gets its turn


@dataclass(slots=True)
class PartitionResult:
    """The verdict on one independent part of a history (e.g. one key)."""

    key: Any
    operations: int
    """Operations searched (after dropping failed ones and indeterminate reads)."""
    verdict: Verdict
    explanation: str
    linearization: list[Operation] | None = None
    """A witness order of the searched operations when linearizable (indeterminate ones that
    were not needed are left out)."""
    states_explored: int = 0
    elapsed: float = 0.0


@dataclass(slots=True)
class CheckResult:
    """The verdict on a whole history, with one `PartitionResult` per partition."""

    verdict: Verdict
    partitions: list[PartitionResult] = field(default_factory=list)
    details: str = ""
    elapsed: float = 0.0

    @property
    def linearizable(self) -> bool:
        """True only for a definite `linearizable` verdict."""
        return self.verdict == LINEARIZABLE


def prepare(model: Model, history: Sequence[Operation]) -> History:
    """The operations the search needs: failed ones and indeterminate reads dropped."""
    kept: History = []
    for op in history:
        if op.status == "fail":
            continue
        if op.indeterminate and op.kind in model.read_only_kinds:
            continue
        kept.append(op)
    return kept


def check(
    history: Sequence[Operation],
    model: Model,
    timeout: float | None = DEFAULT_TIMEOUT,
    exhaustive: bool = False,
) -> CheckResult:
    """Is `history` linearizable with respect to `model`?

    Partitions are searched round-robin in slices, so one hard partition cannot starve an
    easy failing one. The search stops at the first partition found not linearizable unless
    `exhaustive`, and after `timeout` seconds in all (None: no limit); partitions left
    undecided then have the verdict `unknown`.
    """
    start = time.monotonic()
    deadline = math.inf if timeout is None else start + timeout
    parts = model.partition(prepare(model, history))
    progress = [_Progress(model.init()) for _ in parts]
    searches = {k: _search(model, part, progress[k]) for k, part in enumerate(parts)}
    elapsed = [0.0] * len(parts)
    failed = False
    while searches and not (failed and not exhaustive) and time.monotonic() < deadline:
        for k in list(searches):
            began = time.monotonic()
            try:
                next(searches[k])
            except StopIteration:
                del searches[k]
                failed = failed or progress[k].verdict == NOT_LINEARIZABLE
            elapsed[k] += time.monotonic() - began
            if (failed and not exhaustive) or time.monotonic() >= deadline:
                break
    cut_short = "time limit reached" if not failed or exhaustive else "stopped early"
    results = [
        _partition_result(model, part, progress[k], elapsed[k], cut_short)
        for k, part in enumerate(parts)
    ]
    verdicts = {r.verdict for r in results}
    if NOT_LINEARIZABLE in verdicts:
        verdict = NOT_LINEARIZABLE
    elif UNKNOWN_VERDICT in verdicts:
        verdict = UNKNOWN_VERDICT
    else:
        verdict = LINEARIZABLE
    details = _summary(verdict, results, timeout)
    return CheckResult(verdict, results, details, time.monotonic() - start)


def _summary(verdict: Verdict, results: list[PartitionResult], timeout: float | None) -> str:
    n_ops = sum(r.operations for r in results)
    head = f"{verdict}: {n_ops} operations in {len(results)} partition(s)"
    if verdict == LINEARIZABLE:
        return head
    lines = [head]
    lines.extend(r.explanation for r in results if r.verdict == NOT_LINEARIZABLE)
    undecided = sum(r.verdict == UNKNOWN_VERDICT for r in results)
    if verdict == UNKNOWN_VERDICT:
        lines.append(f"time limit ({timeout} s) reached with {undecided} partition(s) undecided")
        lines.extend(r.explanation for r in results if r.verdict == UNKNOWN_VERDICT)
    elif undecided:
        lines.append(f"({undecided} other partition(s) not searched to the end)")
    return "\n".join(lines)


@dataclass(slots=True)
class _Progress:
    """What a search found so far, updated in place as it runs."""

    state: State
    """The state after `order`."""
    order: list[int] = field(default_factory=list)
    """Linearizable: the witness order. Otherwise: the longest prefix reached."""
    verdict: Verdict = UNKNOWN_VERDICT
    explored: int = 0


def _partition_result(
    model: Model, ops: History, progress: _Progress, elapsed: float, cut_short: str
) -> PartitionResult:
    key = model.partition_key(ops)
    witness: list[Operation] | None = None
    if progress.verdict == LINEARIZABLE:
        explanation = "linearizable"
        witness = [ops[i] for i in progress.order]
    elif progress.verdict == NOT_LINEARIZABLE:
        explanation = explain(model, ops, progress.order, progress.state, key)
    else:
        headline = f"undecided ({cut_short}, {progress.explored} states explored)"
        explanation = explain(model, ops, progress.order, progress.state, key, headline)
    return PartitionResult(
        key=key,
        operations=len(ops),
        verdict=progress.verdict,
        explanation=explanation,
        linearization=witness,
        states_explored=progress.explored,
        elapsed=elapsed,
    )


def _search(model: Model, ops: History, progress: _Progress) -> Generator[None, None, None]:
    """The search for one partition, as a generator that pauses every `_SLICE` steps and
    leaves its findings in `progress`. Hot loop: everything is a local, the lists are arrays.

    Two lists share the arrays: the determinate operations' calls and returns, and the
    indeterminate operations' calls. At each node the search first tries the determinate
    calls before the first pending return, then the indeterminate calls before that return,
    so it explains the history without indeterminate operations where it can.
    """
    step = model.step
    n_ops = len(ops)
    inputs = [(op.kind, op.input) for op in ops]
    outputs = [UNKNOWN if op.indeterminate else op.output for op in ops]
    determinate = [not op.indeterminate for op in ops]
    pure = [model.is_pure(inputs[i], outputs[i]) for i in range(n_ops)]

    # Events sorted by time; at equal times calls come first (such operations overlap).
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if determinate[i]:
            events.append((op.effective_ret, 1, i))
    events.sort()
    # Entries 1..m are the events in time order; m + 1 and m + 2 head and tail the main list,
    # m + 3 and m + 4 the indeterminate one. op_of[e] >= 0: call of that operation; < 0:
    # return of operation ~op_of[e]. ret_of[e]: the return entry of a call (0: none).
    m = len(events)
    main_head, main_tail, info_head, info_tail = m + 1, m + 2, m + 3, m + 4
    op_of = [0] * (m + 5)
    ret_of = [0] * (m + 5)
    nxt = [0] * (m + 5)
    prv = [0] * (m + 5)
    call_entry = [0] * n_ops
    last = {True: main_head, False: info_head}
    for e, (_, is_ret, i) in enumerate(events, 1):
        if is_ret:
            op_of[e] = ~i
            ret_of[call_entry[i]] = e
        else:
            op_of[e] = i
            call_entry[i] = e
        nxt[last[determinate[i]]] = e
        prv[e] = last[determinate[i]]
        last[determinate[i]] = e
    nxt[last[True]], prv[main_tail] = main_tail, last[True]
    nxt[last[False]], prv[info_tail] = info_tail, last[False]

    bits = [1 << i for i in range(n_ops)]
    remaining = sum(determinate)
    state: State = progress.state
    linearized = 0
    cache: set[tuple[int, State]] = set()
    # (call entry, state before, linearized before, boundary before)
    stack: list[tuple[int, State, int, int]] = []
    best = 0
    budget = _SLICE
    entry = nxt[main_head]
    boundary = 0  # 0: walking the main list; else the first pending return entry
    while remaining:
        budget -= 1
        if not budget:
            progress.explored = len(cache)
            yield
            budget = _SLICE
        if not boundary:
            i = op_of[entry]
            if i < 0:  # the first pending return: now the indeterminate calls before it
                boundary = entry
                entry = nxt[info_head]
                continue
        elif entry < boundary:
            i = op_of[entry]
        else:
            i = -1  # nothing left to try here
        if i >= 0:
            ok, new_state = step(state, inputs[i], outputs[i])
            # An indeterminate operation that changes nothing here is as good as dropped.
            if ok and (not boundary or new_state != state):
                new_linearized = linearized | bits[i]
                memo = (new_linearized, new_state)
                if memo in cache:
                    if pure[i]:
                        # A pure operation that is possible now can be moved to the front
                        # of any continuation; all of those fail, so this node fails.
                        i = -1
                else:
                    cache.add(memo)
                    stack.append((entry, state, linearized, boundary))
                    state = new_state
                    linearized = new_linearized
                    # lift the call and its return out of their list
                    p, n = prv[entry], nxt[entry]
                    nxt[p] = n
                    prv[n] = p
                    r = ret_of[entry]
                    if r:
                        p, n = prv[r], nxt[r]
                        nxt[p] = n
                        prv[n] = p
                        remaining -= 1
                    if len(stack) > best:
                        best = len(stack)
                        progress.order = [op_of[s[0]] for s in stack]
                        progress.state = state
                    entry = nxt[main_head]
                    boundary = 0
                    continue
            if i >= 0:
                entry = nxt[entry]
                continue
        # This node failed: backtrack. Popping a pure operation means its node failed too
        # (see above), so keep popping.
        while True:
            if not stack:
                progress.verdict = NOT_LINEARIZABLE
                progress.explored = len(cache)
                return
            entry, state, linearized, boundary = stack.pop()
            # put the call and its return back, in reverse order of removal
            r = ret_of[entry]
            if r:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                remaining += 1
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not pure[op_of[entry]]:
                break
        entry = nxt[entry]
    progress.verdict = LINEARIZABLE
    progress.order = [op_of[s[0]] for s in stack]
    progress.state = state
    progress.explored = len(cache)


def _when(op: Operation) -> str:
    ret = "?" if op.indeterminate else f"{op.ret:g}"
    return f"[{op.call:g}, {ret}]"


def _line(model: Model, op: Operation) -> str:
    return f"client {op.client_id} {model.describe_operation(op)} {_when(op)}"


def explain(
    model: Model,
    ops: History,
    prefix: Sequence[int],
    state: State,
    key: Any = None,
    headline: str = "not linearizable",
    show_prefix: int = 8,
) -> str:
    """Why the search got no further than `prefix` (indices into `ops`, in linearization
    order, ending in `state`): the operation that had to take effect next and every candidate
    that could have been linearized at that point, with the reason it could not.
    `headline` says what kind of search ended there."""
    where = "" if key is None else f" for key {key!r}"
    done = set(prefix)
    pending = [i for i in range(len(ops)) if i not in done]
    lines = [
        f"{headline}{where}: the longest linearizable prefix found has "
        f"{len(prefix)} of {len(ops)} operations and leaves the state "
        f"{model.describe_state(state)}"
    ]
    if len(prefix) > show_prefix:
        lines.append(f"  ... {len(prefix) - show_prefix} earlier operations")
    for pos in range(max(0, len(prefix) - show_prefix), len(prefix)):
        lines.append(f"  {pos + 1}. {_line(model, ops[prefix[pos]])}")
    deadlines = [i for i in pending if not ops[i].indeterminate]
    if not deadlines:
        return "\n".join(lines)
    first = min(deadlines, key=lambda i: ops[i].effective_ret)
    due = ops[first].effective_ret
    candidates = []
    any_possible = False
    for i in sorted((i for i in pending if ops[i].call <= due), key=lambda i: ops[i].call):
        op = ops[i]
        output = UNKNOWN if op.indeterminate else op.output
        possible, after = model.step(state, (op.kind, op.input), output)
        if possible:
            # only after a timeout: a finished search would have gone deeper through it
            any_possible = True
            why = f"possible (state becomes {model.describe_state(after)}), not yet explored"
        else:
            why = f"impossible in state {model.describe_state(state)}"
        candidates.append(f"    - {_line(model, op)}: {why}")
    then = (
        "the operations that could go next:"
        if any_possible
        else "but no pending operation can be linearized next:"
    )
    lines.append(f"  then {_line(model, ops[first])} must take effect by {due:g}, {then}")
    lines.extend(candidates)
    return "\n".join(lines)
