"""Which tasks a run may submit: `--only`, `--from`, `--until`, `--force` and `hpcml retry`.

Pure: a Plan and the user's choice in, the task keys that may run and those to rerun
despite the cache out. Everything else of the plan is taken from the cache (or from a
live job of an earlier run); when a task that may run needs an upstream output that is
neither, `missing_upstream` names it and submission refuses (run/submit.py).

Example:

    chosen = choose(plan, Selection(only=("train",)))
    chosen.runnable    # the keys of train's tasks
    sub = subplan(plan, chosen)   # train and the steps it reads: what the run's plan.json holds
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hpcml.errors import SubmitError
from hpcml.model import Plan


@dataclass(frozen=True)
class Selection:
    """What the user asked for: step names (`only`, `start`: --from, `until`, `force`), or
    exact task keys (`keys`: `hpcml retry`). Empty: every task, nothing forced."""

    only: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    until: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    keys: frozenset[str] | None = None

    @property
    def narrowed(self) -> bool:
        """Whether some steps are left out of the run."""
        return bool(self.only or self.start or self.until) or self.keys is not None

    def describe(self) -> str:
        """`--only train --force train`, for messages."""
        parts = [f"--{flag} {','.join(names)}" for flag, names in
                 (("only", self.only), ("from", self.start), ("until", self.until), ("force", self.force)) if names]
        if self.keys is not None:
            parts.append(f"{len(self.keys)} task(s) to retry")
        return " ".join(parts)


@dataclass(frozen=True)
class Chosen:
    """The outcome of `choose`: task keys that may be submitted (None: all) and task keys to
    rerun even when complete."""

    runnable: frozenset[str] | None
    forced: frozenset[str]

    def may_run(self, key: str) -> bool:
        return self.runnable is None or key in self.runnable


def choose(plan: Plan, sel: Selection | None) -> Chosen:
    """The tasks of `plan` that `sel` lets run and those it forces; SubmitError for an
    unknown step name (with the allowed ones) or contradictory options."""
    if sel is None:
        return Chosen(None, frozenset())
    for flag, names in (("only", sel.only), ("from", sel.start), ("until", sel.until), ("force", sel.force)):
        _check_names(plan, flag, names)
    if sel.only and (sel.start or sel.until):
        raise SubmitError("--only cannot be combined with --from/--until: --only names every step to run")
    steps: set[str] = set(plan.step_order)
    if sel.only:
        steps = set(sel.only)
    if sel.start:
        steps &= descendants(plan, sel.start)
    if sel.until:
        steps &= ancestors(plan, sel.until)
    if not steps:
        raise SubmitError(f"{sel.describe()}: no step is both downstream of --from and upstream of --until")
    runnable = {t.key for s in steps for t in plan.steps[s].tasks}
    if sel.keys is not None:
        gone = sel.keys - {t.key for sp in plan.steps.values() for t in sp.tasks}
        if gone:
            raise SubmitError(f"{len(gone)} task(s) to retry are no longer in {plan.workflow.path}: it was edited "
                              "since that run, so their keys changed; `hpcml run` runs the current version")
        runnable &= sel.keys
    outside = [s for s in sel.force if not any(t.key in runnable for t in plan.steps[s].tasks)]
    if outside:
        raise SubmitError(f"--force {','.join(outside)}: not among the steps this run may run ({sel.describe()}); "
                          "add it to the selection")
    forced = _downstream_keys(plan, {t.key for s in sel.force for t in plan.steps[s].tasks}) & runnable
    whole = not sel.narrowed
    return Chosen(None if whole else frozenset(runnable), frozenset(forced))


def subplan(plan: Plan, chosen: Chosen) -> Plan:
    """The part of `plan` a narrowed run is about: the steps with a task that may run, and
    the steps they read (whose outputs come from the cache). Whole steps, so array indices
    and manifests stay those of the full plan."""
    if chosen.runnable is None:
        return plan
    busy = {name for name, sp in plan.steps.items() if any(t.key in chosen.runnable for t in sp.tasks)}
    keep = busy | {up for name in busy for up in plan.steps[name].step.needs}
    order = tuple(n for n in plan.step_order if n in keep)
    return Plan(plan.workflow, order, {n: plan.steps[n] for n in order}, plan.image_order, plan.images)


def missing_upstream(plan: Plan, todo: Iterable[str], available: Collection[str]) -> dict[str, list[str]]:
    """Upstream tasks that tasks to submit (`todo`, keys) read but nobody provides: not to be
    submitted, not complete, not live (`available`). Task id (`prepare/0`) → the ids of
    the tasks that need it."""
    todo_keys = list(dict.fromkeys(todo))
    have = set(todo_keys) | set(available)
    by_key = {t.key: t for sp in plan.steps.values() for t in sp.tasks}
    out: dict[str, list[str]] = {}
    for key in todo_keys:
        t = by_key[key]
        for up in t.upstream:
            if up not in have:
                out.setdefault(by_key[up].id, []).append(t.id)
    return out


def missing_message(missing: Mapping[str, list[str]], sel: Selection | None) -> str:
    """Why a narrowed run is refused, naming the missing upstream outputs."""
    first = sorted(missing)[:5]
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    lines = [f"{up} (needed by {', '.join(sorted(missing[up])[:3])}{'…' if len(missing[up]) > 3 else ''})" for up in first]
    steps = sorted({m.split("/", 1)[0] for m in missing})
    how = f"{sel.describe()} leaves out" if sel is not None and sel.describe() else "this run leaves out"
    return (f"nothing submitted: {how} upstream output that no run has completed and no job is producing: "
            f"{'; '.join(lines)}{more}. Run {', '.join(steps)} too (e.g. `--from {steps[0]}`), or drop the selection")


def descendants(plan: Plan, roots: Iterable[str]) -> set[str]:
    """The steps `roots` and every step downstream of them."""
    out = set(roots)
    for name in plan.step_order:  # topological: an upstream step is seen before its downstream
        if set(plan.steps[name].step.needs) & out:
            out.add(name)
    return out


def ancestors(plan: Plan, roots: Iterable[str]) -> set[str]:
    """The steps `roots` and every step they depend on, directly or not."""
    out = set(roots)
    for name in reversed(plan.step_order):
        if name in out:
            out.update(plan.steps[name].step.needs)
    return out


def _downstream_keys(plan: Plan, keys: set[str]) -> set[str]:
    """`keys` and every task reading one of them, directly or not: a rerun task's
    downstream read its old output, so they are rerun too."""
    out = set(keys)
    for name in plan.step_order:
        for t in plan.steps[name].tasks:
            if out.intersection(t.upstream):
                out.add(t.key)
    return out


def _check_names(plan: Plan, flag: str, names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in plan.steps]
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], list(plan.step_order), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SubmitError(f"--{flag}: no step {', '.join(map(repr, unknown))} in {plan.workflow.path}{hint}; "
                      f"steps: {', '.join(plan.step_order)}")


def split_names(values: Iterable[str]) -> tuple[str, ...]:
    """`("a,b", "c")` → `("a", "b", "c")`: an option given as STEP[,STEP] and/or repeated."""
    return tuple(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))
