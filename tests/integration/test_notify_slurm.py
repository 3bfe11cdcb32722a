"""Notifications of detached runs on the real SLURM testbed, to a webhook server on loopback.

A run that succeeds posts exactly one message (finish) with the right counts; a run with a
failing task posts the failure message while another step still runs, then the finish
message; `hpcml status --watch` re-attaches to the detached run and exits 1 like status.
The webhook URL is in no file under .hpcml/ but the run's 0600 secrets file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_run_slurm import catalog, settings, settings_env, write_workflow  # noqa: F401 - fixtures
from testbed import Apptainer

from hpcml import api
from hpcml.config import Settings

pytestmark = pytest.mark.testbed

NOTIFY = """\
notify:
  on: [finish, failure]
  webhook: HPCML_TEST_HOOK
"""

OK = """\
  prepare:
    run: echo data > {out}/data.txt
  sweep:
    needs: [prepare]
    matrix: {lr: [1, 2]}
    run: cat {in.prepare}/data.txt > {out}/r.txt
"""

FAILING = """\
  prepare:
    run: echo data > {out}/data.txt
  sweep:
    needs: [prepare]
    matrix: {lr: [1, 2]}
    run: if [ {lr} = 2 ]; then echo "loss is nan" >&2; exit 3; fi
  evaluate:
    needs: [sweep]
    run: echo done
  slow:
    run: sleep 25
"""


class Hook:
    """A webhook server on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, object]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                bodies.append({"path": self.path, "at": time.time(), **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, predicate: Callable[[list[dict[str, object]]], bool], timeout: float = 180) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while not predicate(self.bodies) and time.monotonic() < deadline:
            time.sleep(0.5)
        return list(self.bodies)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch, apptainer: Apptainer, catalog: Path) -> Iterator[Hook]:  # noqa: F811
    server = Hook()
    monkeypatch.setenv("HPCML_TEST_HOOK", server.url)
    for name, value in settings_env(apptainer, catalog).items():  # the notification job's settings
        monkeypatch.setenv(name, value)
    yield server
    server.server.shutdown()


def _for_run(bodies: list[dict[str, object]], run_id: str) -> list[dict[str, object]]:
    return [b for b in bodies if b["hpcml"]["run"] == run_id]  # type: ignore[index]


def test_detached_runs_notify_once_and_failures_early(tmp_path: Path, settings: Settings, hook: Hook) -> None:  # noqa: F811
    ok_wf = write_workflow(tmp_path / "ok", "notifyok", OK)
    bad_wf = write_workflow(tmp_path / "bad", "notifybad", FAILING)
    for wf in (ok_wf, bad_wf):
        text = wf.read_text()
        wf.write_text(text.replace("steps:\n", NOTIFY + "steps:\n", 1))
    ok = api.run(ok_wf, executor="slurm", settings=settings, watch=False, detach=True)
    bad = api.run(bad_wf, executor="slurm", settings=settings, watch=False, detach=True)

    # `hpcml status --watch` re-attaches to the detached failing run, says the failure, exits 1.
    watched = subprocess.run(
        [sys.executable, "-m", "hpcml.cli", "status", "--watch", "--workflow", str(bad_wf)],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(), stdin=subprocess.DEVNULL,
    )
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "sweep/1: failed (exit 3)" in watched.stdout and "hpcml logs sweep/1" in watched.stdout

    bodies = hook.wait(lambda b: len(_for_run(b, ok.run_id)) >= 1 and len(_for_run(b, bad.run_id)) >= 2)
    time.sleep(5)  # anything more would come now (the success run's failure job is dropped by SLURM)
    ok_msgs = _for_run(hook.bodies, ok.run_id)
    assert [m["hpcml"]["event"] for m in ok_msgs] == ["finish"], ok_msgs  # type: ignore[index]
    assert ok_msgs[0]["hpcml"]["counts"] == {"completed": 3} and ok_msgs[0]["hpcml"]["ok"] is True  # type: ignore[index]
    assert "finished" in str(ok_msgs[0]["text"]) and "report: " in str(ok_msgs[0]["text"])

    bad_msgs = _for_run(bodies, bad.run_id)
    assert [m["hpcml"]["event"] for m in bad_msgs] == ["failure", "finish"], bad_msgs  # type: ignore[index]
    early, final = bad_msgs[0]["hpcml"], bad_msgs[1]["hpcml"]  # type: ignore[index]
    assert early["failed"] == ["sweep/1"] and "hpcml logs sweep/1" in str(bad_msgs[0]["text"])
    assert any(s in early["counts"] for s in ("running", "pending")), early  # slow had not ended yet
    assert final["counts"] == {"completed": 3, "failed": 1, "upstream_failed": 1} and final["ok"] is False
    assert Path(final["report"]).is_file() and Path(final["report"]).parent.name == bad.run_id
    assert api.status(workflow=str(bad_wf)).ok is False  # the notification jobs change nothing

    for wf in (ok_wf, bad_wf):
        holders = []
        for path in (wf.parent / ".hpcml").rglob("*"):
            if path.is_file() and hook.url.encode() in path.read_bytes():
                holders.append(path)
        assert [p.relative_to(wf.parent / ".hpcml").as_posix().split("/", 2)[2] for p in holders] == ["env/notify.env"]
        assert stat.S_IMODE(holders[0].stat().st_mode) == 0o600
