"""The run report: one self-contained HTML file (inline CSS, JS and SVG; no network), pure.

`render(trace)` returns the page. What needs no script is HTML written here: the summary,
the failures with their cause and log tail, the DAG as SVG, images and provenance. The
timeline and the task table are drawn by `report.js` (package data beside this module)
from the run's data, embedded once as compact JSON: the timeline on one canvas and the
table a page at a time, so a sweep of 10,000 tasks stays a few MB and opens at once
(bench/report.py measures it).

Example:

    Path("report.html").write_text(render(trace.build(...)))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any

from hpcml.spec.units import human_duration

if TYPE_CHECKING:
    from hpcml.run.trace import RunTrace, StepInfo, TaskTrace

#: Colour of each outcome (timeline bars, state badges, the DAG's state strips).
COLOURS: Mapping[str, str] = {
    "ok": "#2e7d32",
    "completed": "#2e7d32",
    "cached": "#81c784",
    "failed": "#c62828",
    "timeout": "#ad1457",
    "oom": "#6a1b9a",
    "node_fail": "#4e342e",
    "preempted": "#ef6c00",
    "cancelled": "#757575",
    "upstream_failed": "#e57373",
    "not_submitted": "#bdbdbd",
    "lost": "#37474f",
    "requeued": "#ef6c00",
    "running": "#1565c0",
    "pending": "#90caf9",
    "queued": "#cfd8dc",
}
#: Failed tasks whose cause and log tail are written out in full above the table.
MAX_FAILURES_SHOWN = 50


@dataclass(frozen=True)
class Assets:
    """The page's style sheet and script (package data: report.css, report.js)."""

    css: str
    js: str


def default_assets() -> Assets:
    """report.css and report.js from the package."""
    here = resources.files("hpcml.render")
    return Assets(here.joinpath("report.css").read_text(encoding="utf-8"), here.joinpath("report.js").read_text(encoding="utf-8"))


def render(tr: RunTrace, assets: Assets | None = None) -> str:
    """The whole report page of `tr`."""
    a = assets or default_assets()
    title = f"hpcml report: {tr.workflow} run {tr.run}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{a.css}</style></head><body>",
        f"<header><h1>{escape(tr.workflow)} <small>run {escape(tr.run)}</small></h1></header>",
        _summary(tr),
        _failures(tr),
        '<section id="dag"><h2>Steps</h2>',
        dag_svg(tr.steps, tr.tasks),
        "</section>",
        _timeline(),
        '<section id="tasks"><h2>Tasks</h2>'
        '<p><input id="task-filter" type="search" placeholder="filter: step, state, node…" aria-label="filter tasks"> '
        '<span id="task-count"></span></p>'
        '<table id="task-table"><thead><tr><th>task</th><th>state</th><th>exit</th><th>attempts</th><th>job</th>'
        "<th>node</th><th>devices</th><th>queue wait</th><th>elapsed</th><th>GPU-h</th><th>MaxRSS / requested</th>"
        '</tr></thead><tbody></tbody></table><p><button id="task-more" hidden>show more</button></p>'
        "<noscript><p>The timeline and the task table need JavaScript; the data is in this file "
        "(script#hpcml-data) and in <code>hpcml report --json</code>.</p></noscript></section>",
        _images(tr),
        _provenance(tr),
        f'<script type="application/json" id="hpcml-data">{_json(compact(tr))}</script>',
        f"<script>\n{a.js}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


# ---- sections written here --------------------------------------------------------------


def _summary(tr: RunTrace) -> str:
    counts = " ".join(
        f'<span class="badge" style="background:{COLOURS.get(s, "#999")}">{escape(s.replace("_", " "))} {n}</span>'
        for s, n in tr.counts.items()
    )
    rows = [
        ("tasks", f"{len(tr.tasks)} &nbsp; {counts}"),
        ("executor", escape(tr.executor) + ("" if tr.accounting else " (no accounting: figures from the wrapper's own records)")),
        ("wall time", _duration(tr.wall_s) + " (first submission to last end)"),
        ("GPU-hours", f"{tr.gpu_hours:.3f}" + (" (allocated GPUs × elapsed, sacct)" if tr.accounting else " (devices × run time, wrapper)")),
        ("CPU-hours", f"{tr.cpu_hours:.3f} (allocated CPUs × elapsed, sacct)" if tr.cpu_hours is not None else "not known"),
        ("peak memory", _peak_memory(tr)),
    ]
    preempted = [t for t in tr.ordered() if t.preempted]
    if preempted:  # not failures: SLURM requeued each, and no retry was spent on it
        rows.append(("preempted", ", ".join(f"{escape(t.label)} ×{t.preempted}" for t in preempted)
                     + " (requeued by SLURM; retries untouched)"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    missing = ""
    if tr.missing:
        missing = (
            '<p class="note" id="missing">Without SLURM accounting these columns are missing: '
            + ", ".join(escape(m) for m in tr.missing)
            + ". Times, exit codes and devices come from the job wrapper's own records.</p>"
        )
    return f'<section id="summary"><h2>Summary</h2><table class="kv">{body}</table>{missing}</section>'


def _peak_memory(tr: RunTrace) -> str:
    peaks = [(t.max_rss, t.req_mem, t.label) for t in tr.tasks if t.max_rss is not None]
    if not peaks:
        return "not recorded by SLURM (no job accounting gather)" if tr.accounting else "not known (needs accounting)"
    rss, req, label = max(peaks)
    return f"{_size(rss)} of {escape(req or '?')} requested ({escape(label)})"


def _failures(tr: RunTrace) -> str:
    failed = [t for t in tr.ordered() if t.state in _FAILED_OWN]
    if not failed:
        return ""
    items = []
    for n, t in enumerate(failed[:MAX_FAILURES_SHOWN]):
        cause = escape(t.state.replace("_", " ") + (f" (exit {t.exit_code})" if t.exit_code not in (None, 0) else ""))
        detail = f" — {escape(t.detail)}" if t.detail and not t.detail.startswith("exit ") else ""
        # The first few tails open: a sweep with many failures keeps the timeline in view.
        opened = " open" if n < 3 else ""
        tail = f"<details{opened}><summary>log tail</summary><pre>{escape(t.log_tail)}</pre></details>" if t.log_tail else ""
        items.append(
            f'<li class="failure" data-task="{escape(t.label)}"><b>{escape(t.label)}</b> {_point(t.point)} '
            f"{cause}{detail} <code>hpcml logs {escape(t.label)}</code>{tail}</li>"
        )
    more = f"<p>and {len(failed) - MAX_FAILURES_SHOWN} more in the table below.</p>" if len(failed) > MAX_FAILURES_SHOWN else ""
    return f'<section id="failures"><h2>Failures</h2><ol>{"".join(items)}</ol>{more}</section>'


#: Failures of a task's own (its downstream "upstream failed" are listed in the table only).
_FAILED_OWN = frozenset({"failed", "timeout", "oom", "node_fail", "preempted", "cancelled", "lost"})


def _timeline() -> str:
    legend = " ".join(
        f'<span class="key"><i style="background:{COLOURS[k]}"></i>{k}</span>'
        for k in ("queued", "running", "ok", "requeued", "failed")
    )
    return (
        '<section id="timeline"><h2>Timeline</h2>'
        f'<p class="legend">{legend} — drag: pan; ctrl+wheel: zoom time; shift+wheel: zoom tasks; wheel: scroll tasks. '
        'time <button id="tl-in">+</button><button id="tl-out">−</button> '
        'tasks <button id="tl-rows-in">+</button><button id="tl-rows-out">−</button> '
        '<button id="tl-reset">reset</button></p>'
        '<div id="tl-wrap"><canvas id="tl-canvas" role="img" aria-label="timeline: one bar per task and attempt"></canvas>'
        '<div id="tl-tip" hidden></div></div><pre id="timeline-index" hidden></pre></section>'
    )


def _images(tr: RunTrace) -> str:
    if not tr.images:
        return ""
    rows = "".join(
        f"<tr><td>{escape(i.name)}</td><td><code>{escape(i.key[:16])}</code></td><td><code>{escape(i.sha256[:16])}</code></td>"
        f"<td>{escape(i.created)}</td><td>{escape(i.user)}@{escape(i.host)}</td>"
        f"<td>{_duration(i.build_seconds)}</td><td>{escape(i.apptainer_version)}</td></tr>"
        for i in tr.images
    )
    return (
        '<section id="images"><h2>Images</h2><table><thead><tr><th>image</th><th>key</th><th>sif sha256</th>'
        f"<th>built</th><th>by</th><th>build time</th><th>apptainer</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _provenance(tr: RunTrace) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in sorted(tr.provenance.items()))
    spec = f"<details><summary>workflow as submitted</summary><pre>{escape(tr.spec)}</pre></details>" if tr.spec else ""
    return f'<section id="provenance"><h2>Provenance</h2><table class="kv">{rows}</table>{spec}</section>'


# ---- the DAG picture ---------------------------------------------------------------------


def dag_svg(steps: Sequence[StepInfo], tasks: Sequence[TaskTrace]) -> str:
    """The steps as boxes in columns by depth, arrows from each need, and a strip per box
    coloured by its tasks' states."""
    depth: dict[str, int] = {}
    for s in steps:  # steps come in DAG order: needs first
        depth[s.name] = 1 + max((depth.get(n, -1) for n in s.needs), default=-1)
    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(depth[s.name], []).append(s.name)
    w, h, gx, gy = 170, 54, 60, 18
    pos = {name: (10 + d * (w + gx), 10 + i * (h + gy)) for d, names in columns.items() for i, name in enumerate(names)}
    width = 20 + len(columns) * (w + gx) - gx
    height = 20 + max((len(v) for v in columns.values()), default=0) * (h + gy) - gy
    by_step: dict[str, dict[str, int]] = {}
    for t in tasks:
        counts = by_step.setdefault(t.step, {})
        counts[t.state] = counts.get(t.state, 0) + 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0L10,5L0,10z" fill="#78909c"/></marker></defs>',
    ]
    for s in steps:
        x2, y2 = pos[s.name]
        for n in s.needs:
            if n in pos:
                x1, y1 = pos[n]
                mx = (x1 + w + x2) / 2
                out.append(
                    f'<path d="M{x1 + w},{y1 + h / 2} C{mx},{y1 + h / 2} {mx},{y2 + h / 2} {x2},{y2 + h / 2}" '
                    'fill="none" stroke="#78909c" stroke-width="1.5" marker-end="url(#arrow)"/>'
                )
    for s in steps:
        x, y = pos[s.name]
        counts = by_step.get(s.name, {})
        total = sum(counts.values()) or 1
        out.append(f'<g class="step" data-step="{escape(s.name)}"><title>{escape(_counts_text(s, counts))}</title>')
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#fff" stroke="#546e7a"/>')
        out.append(f'<text x="{x + 8}" y="{y + 19}" class="name">{escape(s.name)}</text>')
        out.append(f'<text x="{x + 8}" y="{y + 35}" class="sub">{s.tasks} task{"s" if s.tasks != 1 else ""} · {escape(s.image)}</text>')
        cx = float(x + 8)
        for state, n in counts.items():
            part = (w - 16) * n / total
            out.append(f'<rect x="{cx:.1f}" y="{y + h - 12}" width="{part:.1f}" height="6" fill="{COLOURS.get(state, "#999")}"/>')
            cx += part
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _counts_text(s: StepInfo, counts: Mapping[str, int]) -> str:
    return f"{s.name}: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())


# ---- the data the script draws from --------------------------------------------------------


def compact(tr: RunTrace) -> dict[str, Any]:
    """The report's data in a compact, columnar form: times in whole seconds from the
    first submission, states and steps as indices (a sweep of 10,000 tasks stays small)."""
    t0 = tr.first_submit or tr.now
    steps = [s.name for s in tr.steps]
    states = sorted({t.state for t in tr.tasks})
    order = {id(t): i for i, t in enumerate(tr.ordered())}
    rows = []
    for t in tr.tasks:
        segs: list[Any] = []
        for s in t.segments(tr.now):
            segs += [_SEG.index(s.outcome or s.kind), round(s.start - t0), round(s.end - t0)]
        rows.append([
            steps.index(t.step) if t.step in steps else 0, t.index, states.index(t.state), t.exit_code, t.job or "",
            t.node, ",".join(t.devices), _round(t.queue_wait_s), _round(t.elapsed_s), round(t.gpu_hours, 4),
            t.max_rss, t.req_mem, len(t.attempts) or len(t.allocations), order[id(t)], segs, _point_text(t.point),
        ])
    return {
        "t0": round(t0),
        "span": round((tr.last_end or tr.now) - t0) if tr.tasks else 0,
        "steps": steps,
        "states": states,
        "segkinds": list(_SEG),
        "colours": dict(COLOURS),
        "tasks": rows,
    }


#: Timeline bar kinds as the script numbers them.
_SEG = ("queued", "running", "ok", "requeued", "failed")


def _json(data: object) -> str:
    # Inside <script>: no "</script>" or "<!--" may appear, so every "<" is escaped.
    return json.dumps(data, separators=(",", ":"), sort_keys=True).replace("<", "\\u003c")


def _round(v: float | None) -> int | None:
    return None if v is None else round(v)


def _point(point: Mapping[str, Any]) -> str:
    return f"<code>{escape(_point_text(point))}</code>" if point else ""


def _point_text(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return human_duration(seconds)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
