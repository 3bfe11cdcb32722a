"""Notifications of a run: submitted with it, sent from inside SLURM.

At submission (`submit_jobs`), for each event of the spec's `notify.on`, one small job is
queued behind the run's jobs (render/notify.py): `finish` after all of them (`afterany`),
`failure` as soon as any one fails (`afternotok`, or-ed), so a failing task is heard of
before the rest of the DAG ends. A `failure` job whose jobs all succeed can never start,
and SLURM drops it (`--kill-on-invalid-dep`). The webhook URL is read from the
environment then and kept only in `runs/<id>/env/notify.env` (mode 0600).

When the job runs (`hpcml _notify`, through api.notify), `send` writes the report, builds
a Slack/Mattermost-compatible message (counts, wall time, GPU-hours, the report's path)
and posts it once: a marker created with O_EXCL before posting keeps a requeued or
repeated notification job from sending it twice.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml.clients.slurm import Slurm
from hpcml.errors import ConfigError, SubmitError
from hpcml.fsutil import atomic_write
from hpcml.model import ENV_NAME_RE, Notify
from hpcml.render.notify import EVENTS, NotifySpec, dependency, render_notify_script
from hpcml.spec.rules import MAIL_RE

if TYPE_CHECKING:
    from hpcml.clients.runner import Runner
    from hpcml.config import Settings
    from hpcml.run.journal import Journal
    from hpcml.run.rundir import RunDir, RunPaths
    from hpcml.run.trace import RunTrace

#: The run's file holding the webhook URL (under runs/<id>/env/, mode 0600).
WEBHOOK_FILE = "notify.env"
#: Seconds a webhook may take to answer.
POST_TIMEOUT_S = 20.0


def effective(notify: Notify | None, settings: Settings) -> Notify | None:
    """The workflow's `notify:`, else the one of the configuration (`notify_on`,
    `notify_webhook`, `notify_mail`); ConfigError for a configured value the spec would refuse."""
    if notify is not None or not settings.notify_on:
        return notify
    bad = [e for e in settings.notify_on if e not in EVENTS]
    if bad:
        raise ConfigError(f"notify_on: unknown event(s) {', '.join(bad)}; allowed: {', '.join(EVENTS)}")
    hook, mail = settings.notify_webhook, settings.notify_mail
    if hook is not None and not ENV_NAME_RE.fullmatch(hook):
        raise ConfigError("notify_webhook must name the environment variable holding the URL, not be the URL")
    if mail is not None and not MAIL_RE.fullmatch(mail):
        raise ConfigError(f"notify_mail {mail!r} is not one plain address (user@host)")
    if hook is None and mail is None:
        raise ConfigError("notify_on needs notify_webhook (a secret's name) or notify_mail")
    return Notify(tuple(dict.fromkeys(settings.notify_on)), hook, mail)


def webhook_file(paths: RunPaths) -> Path:
    return paths.env / WEBHOOK_FILE


def submit_jobs(
    notify: Notify,
    *,
    workflow: str,
    run_dir: RunDir,
    paths: RunPaths,
    journal: Journal,
    job_ids: Sequence[str],
    webhook_url: str | None,
    python: str,
    runner: Runner | None,
) -> dict[str, str]:
    """Write the webhook file and queue one notification job per event behind `job_ids`;
    event → job id. Nothing is queued when the run submitted no job."""
    if not job_ids:
        return {}
    if webhook_url is not None:
        atomic_write(webhook_file(paths), webhook_url + "\n", mode=0o600, parents=True)
    slurm = Slurm(runner)
    out: dict[str, str] = {}
    for event in notify.on:
        spec = NotifySpec(workflow, paths.run_id, event, str(run_dir.path), python, notify.mail)
        script = paths.jobs / f"notify-{event}.sbatch"
        atomic_write(script, render_notify_script(spec), parents=True)
        (paths.root / "notify").mkdir(exist_ok=True)
        extra = [f"--dependency={dependency(event, job_ids)}", "--kill-on-invalid-dep=yes"]
        job_id = slurm.sbatch(str(script), extra=extra)
        journal.append("notify", on=event, job_id=job_id)
        out[event] = job_id
    return out


@dataclass(frozen=True)
class Sent:
    """What one notification job did."""

    event: str
    message: Mapping[str, Any]
    report: str
    posted: bool  # False: already sent by an earlier job, or no webhook (mail only)
    error: str = ""


def message(tr: RunTrace, event: str, report: str) -> dict[str, Any]:
    """The webhook payload: Slack's and Mattermost's `text`, and the figures as `hpcml`."""
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in tr.counts.items())
    failed = [t for t in tr.failures() if t.state != "upstream_failed"]
    ok = not tr.failures() and all(t.state in ("completed", "cached") for t in tr.tasks)
    wall = f"{tr.wall_s / 60:.1f} min" if tr.wall_s is not None else "?"
    if event == "failure":
        first = failed[0] if failed else None
        what = f"{first.label} {first.state.replace('_', ' ')}" + (f" (exit {first.exit_code})" if first and first.exit_code else "") if first else "a task failed"
        head = f"hpcml: run {tr.run} of {tr.workflow}: {what}; `hpcml logs {first.label}`" if first else f"hpcml: run {tr.run} of {tr.workflow}: {what}"
    else:
        head = f"hpcml: run {tr.run} of {tr.workflow} {'finished' if ok else 'ended with failures'}"
    text = f"{head}\n{counts} · wall {wall} · {tr.gpu_hours:.2f} GPU-hours\nreport: {report}"
    return {
        "text": text,
        "hpcml": {
            "event": event, "run": tr.run, "workflow": tr.workflow, "ok": ok, "counts": tr.counts,
            "wall_s": tr.wall_s, "gpu_hours": tr.gpu_hours, "report": report,
            "failed": [t.label for t in failed],
        },
    }


def claim(paths: RunPaths, event: str) -> bool:
    """Take the one right to send `event` for this run (False when it was taken before)."""
    marker = paths.root / "notify" / f"{event}.sent"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def release(paths: RunPaths, event: str) -> None:
    """Give the right back (the post failed): a rerun of the job may try again."""
    (paths.root / "notify" / f"{event}.sent").unlink(missing_ok=True)


def post_json(url: str, payload: Mapping[str, Any], timeout: float = POST_TIMEOUT_S) -> None:
    """POST `payload` as JSON; SubmitError with the answer's status or the network error."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            if answer.status >= 300:
                raise SubmitError(f"webhook answered HTTP {answer.status}")
    except (urllib.error.URLError, OSError) as err:
        # The URL is a credential: the message names the error only.
        raise SubmitError(f"webhook post failed: {getattr(err, 'reason', err)}") from None


def send(
    paths: RunPaths,
    event: str,
    tr: RunTrace,
    report: str,
    *,
    post: Callable[[str, Mapping[str, Any]], None] = post_json,
) -> Sent:
    """Send the message of `event` once (see the module's docstring)."""
    payload = message(tr, event, report)
    if event == "failure" and not tr.failures():
        return Sent(event, payload, report, False, "no task has failed")
    try:
        url = webhook_file(paths).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return Sent(event, payload, report, False)  # mail only: SLURM sends it when this job ends
    if not claim(paths, event):
        return Sent(event, payload, report, False, "already sent")
    try:
        post(url, payload)
    except SubmitError as err:
        release(paths, event)
        return Sent(event, payload, report, False, str(err))
    return Sent(event, payload, report, True)
