"""Notifications: the `notify:` section, the notification job script (golden), its
dependency, the message, and sending it once."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from test_report import small_trace

from hpcml.errors import SpecError, SubmitError
from hpcml.model import Notify
from hpcml.render.notify import NotifySpec, dependency, render_notify_script
from hpcml.run import notify
from hpcml.run.rundir import RunDir
from hpcml.spec import checker

WF = """\
hpcml: 1
name: n
notify:
  {body}
images:
  bb: {{from: scratch}}
steps:
  a: {{image: bb, run: echo}}
"""


def test_notify_section_on_is_a_word_not_a_boolean() -> None:
    wf = checker.loads(WF.format(body="on: [finish, failure]\n  webhook: SLACK_HOOK\n  mail: ana@example.org"), "w.yaml", root="/")
    assert wf.notify == Notify(("finish", "failure"), "SLACK_HOOK", "ana@example.org")


@pytest.mark.parametrize(("body", "message"), [
    ("on: [finish]\n  webhook: https://hooks.slack.com/x", "names the secret holding the URL"),
    ("on: [done]\n  mail: a@b.c", "invalid notify event 'done'"),
    ("on: [finish]", "needs a webhook"),
    ("on: [finish]\n  mail: 'a@b; rm -rf ~'", "invalid notify.mail address"),
    ("webhook: HOOK", "missing the required key 'on'"),
])
def test_notify_section_refusals(body: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        checker.loads(WF.format(body=body), "w.yaml", root="/")
    assert message in str(err.value)


def test_notification_job_script(golden: Callable[[str, str], None], tmp_path: Path) -> None:
    spec = NotifySpec("cifar", "20270115-080000-abcd", "failure", "/lab/p/.hpcml", "/lab/p/.venv/bin/python", "ana@example.org")
    text = render_notify_script(spec)
    golden("notify-failure.sbatch", text)
    script = tmp_path / "n.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "hpcml.cifar." not in text  # reconciliation must never take it for a task's job


def test_dependencies() -> None:
    assert dependency("finish", ["10", "11"]) == "afterany:10:11"
    assert dependency("failure", ["10", "11"]) == "afternotok:10?afternotok:11"


def test_message_and_sent_once(tmp_path: Path) -> None:
    paths = RunDir(tmp_path / ".hpcml").run("r1")
    paths.env.mkdir(parents=True)
    notify.webhook_file(paths).write_text("http://127.0.0.1:1/hook\n")
    posted: list[tuple[str, Mapping[str, Any]]] = []
    tr = small_trace()
    first = notify.send(paths, "failure", tr, "/r/report.html", post=lambda url, body: posted.append((url, body)))
    again = notify.send(paths, "failure", tr, "/r/report.html", post=lambda url, body: posted.append((url, body)))
    assert first.posted and not again.posted and again.error == "already sent" and len(posted) == 1
    url, body = posted[0]
    assert url == "http://127.0.0.1:1/hook"
    assert body["text"].startswith(f"hpcml: run {tr.run} of demo: sweep/1 failed (exit 3); `hpcml logs sweep/1`")
    assert body["hpcml"]["counts"] == {"completed": 3, "failed": 1, "upstream_failed": 1} and body["hpcml"]["failed"] == ["sweep/1"]
    assert "report: /r/report.html" in body["text"]

    def refuse(url: str, body: Mapping[str, Any]) -> None:
        raise SubmitError("webhook answered HTTP 500")

    failed = notify.send(paths, "finish", tr, "/r/report.html", post=refuse)
    assert not failed.posted and "500" in failed.error
    assert notify.send(paths, "finish", tr, "/r/report.html", post=lambda u, b: None).posted  # the right was given back


def test_notify_from_the_configuration_when_the_workflow_has_none() -> None:
    from hpcml import config
    from hpcml.errors import ConfigError

    s = config.load(env={"HPCML_NOTIFY_ON": "failure", "HPCML_NOTIFY_WEBHOOK": "LAB_HOOK", "HPCML_CONFIG": "/nonexistent",
                         "HPCML_SITE_CONFIG": "/nonexistent", "HOME": "/tmp"})
    assert notify.effective(None, s) == Notify(("failure",), "LAB_HOOK", None)
    own = Notify(("finish",), None, "a@b.c")
    assert notify.effective(own, s) is own  # the workflow's section wins
    assert notify.effective(None, config.load(env={"HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent",
                                                  "HOME": "/tmp"})) is None
    for env, message in (({"HPCML_NOTIFY_WEBHOOK": "https://x/y"}, "not be the URL"), ({}, "needs notify_webhook"),
                         ({"HPCML_NOTIFY_ON": "done", "HPCML_NOTIFY_MAIL": "a@b.c"}, "unknown event")):
        bad = config.load(env={"HPCML_NOTIFY_ON": "finish", **env, "HPCML_CONFIG": "/nonexistent",
                               "HPCML_SITE_CONFIG": "/nonexistent", "HOME": "/tmp"})
        with pytest.raises(ConfigError, match=message):
            notify.effective(None, bad)
