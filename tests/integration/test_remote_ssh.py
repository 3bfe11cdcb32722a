"""`hpcml --remote NAME` from a "laptop" directory against the testbed's sshd on loopback,
with the real SLURM and Apptainer behind it (the "cluster" is this machine, reached as root
over SSH; its work root is a temporary directory).

What is shown: a run with a secret completes, and status/logs/runs/cancel agree through the
remote and directly on the cluster side; an unchanged directory sends no file contents,
a changed one sends one file and removes a deleted one; a second sshd as jump host (named
through ~/.ssh/config's ProxyJump) carries the same kind of run; wrong host key, unknown
host, key-less login and an unreachable port are refused with a clear message and nothing
submitted; `retry` and `run --only/--force` rerun only what they name; a connection killed mid-watch is resumed; one killed mid-submission is followed
by a rerun that submits no duplicate job. The remote `hpcml` is a wrapper whose path holds
a blank, quotes, `$` and `;`, and the secret's value holds quotes, `$` and `;`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hpcml import api, config
from hpcml.clients.runner import LocalRunner
from hpcml.clients.slurm import Slurm
from hpcml.clients.ssh import SshRunner, connect
from hpcml.remote.settings import Remote, resolve
from hpcml.remote.sync import put_private
from testbed import write_busybox_workflow

if TYPE_CHECKING:
    from testbed import Apptainer, SlurmCluster, Sshd

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
#: The machine's catalog shared by the test sessions: the quickstart image is built there once.
SHARED_CATALOG = Path("/var/cache/hpcml-testbed/catalog")
HPCML = Path(sys.executable).with_name("hpcml")
SECRET = "it's \"$HOME\"; echo pwned"


@dataclass(frozen=True)
class Lab:
    root: Path
    home: Path
    laptop: Path
    cluster: Path  # the remote work root
    env: dict[str, str]  # the laptop's environment
    remote_env: dict[str, str]  # HPCML_* of the cluster's hpcml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_workflow(lab: Lab, name: str, steps: str) -> Path:
    return write_busybox_workflow(lab.laptop / name, name, steps)


def hpcml(lab: Lab, remote: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
          timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HPCML), "-r", remote, *args], cwd=cwd, env={**lab.env, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def toml_remote(name: str, lab: Lab, **keys: object) -> str:
    base: dict[str, object] = {
        "work_root": str(lab.cluster),
        "hpcml": str(lab.root / "bin dir" / "hpcml 'q' $x;y"),
        "catalogs": [str(lab.root / "catalog")],
        "executor": "slurm",
    }
    base.update(keys)
    lines = [f"[remotes.{name}]"]
    for k, v in base.items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines.append(f"[remotes.{name}.env]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in lab.remote_env.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[tuple[int, Path, Path]]:
    """A second sshd on another loopback port, its own host key: the jump host. Yields
    (port, its public host key file, its log)."""
    d = tmp_path_factory.mktemp("jump")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    port = free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d / 'host_key'}
        PidFile {d / 'sshd.pid'}
        AuthorizedKeysFile {sshd.key_path.parent / 'authorized_keys'}
        AllowUsers root
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        AllowTcpForwarding yes
        LogLevel VERBOSE
        """))
    log = d / "sshd.log"
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"), "-E", str(log)])
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the jump sshd did not start; see {log}")
    yield port, d / "host_key.pub", log
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, slurm_cluster: SlurmCluster, apptainer: Apptainer,
    jump: tuple[int, Path, Path],
) -> Lab:
    root = tmp_path_factory.mktemp("remote")
    home, laptop, cluster = root / "home", root / "laptop", root / "cluster"
    for d in (home / ".ssh", home / ".config" / "hpcml", laptop, cluster, root / "bin dir", root / "slowbin"):
        d.mkdir(parents=True)
    jump_port, jump_key, _log = jump
    # Trusted host keys as a user's known_hosts holds them: [host]:port entries, hashed.
    known = home / ".ssh" / "known_hosts"
    host_key = sshd.known_hosts.read_text().split()[1:3]
    jkey = jump_key.read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n[127.0.0.1]:{jump_port} {' '.join(jkey)}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "127.0.0.1" not in known.read_text()  # hashed
    # Files for the refusals: an empty known_hosts, one where the cluster has the jump's key.
    (root / "empty_known_hosts").write_text("")
    (root / "wrong_known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {' '.join(jkey)}\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "stranger")], check=True)
    key = str(sshd.key_path)
    (home / ".ssh" / "config").write_text(textwrap.dedent(f"""\
        Host jumpbox
          HostName 127.0.0.1
          Port {jump_port}
          User root
          IdentityFile {key}
        Host cluster-via-jump
          HostName 127.0.0.1
          Port {sshd.port}
          User root
          IdentityFile {key}
          ProxyJump jumpbox
        """))
    # The cluster's hpcml: a wrapper at a path that needs quoting; the slow one makes each
    # sbatch take 3 s, so that a submission can be cut in the middle.
    wrapper = root / "bin dir" / "hpcml 'q' $x;y"
    wrapper.write_text(f'#!/bin/sh\nexec {HPCML} "$@"\n')
    slow = root / "bin dir" / "slow-hpcml"
    slow.write_text(f'#!/bin/sh\nPATH={root / "slowbin"}:$PATH exec {HPCML} "$@"\n')
    sbatch = shutil.which("sbatch")
    (root / "slowbin" / "sbatch").write_text(f'#!/bin/sh\nsleep 3\nexec {sbatch} "$@"\n')
    for f in (wrapper, slow, root / "slowbin" / "sbatch"):
        f.chmod(0o755)
    remote_env = {
        "HPCML_CACHE_DIR": str(root / "cache"),
        "HPCML_BUILD_FLAGS": " ".join(apptainer.build_flags),
        "HPCML_EXEC_FLAGS": " ".join(apptainer.exec_flags),
        "HPCML_APPTAINER": apptainer.binary,
        "HPCML_SITE_CONFIG": "/nonexistent",
        "HPCML_CONFIG": "/nonexistent",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCML_", "SSH_AUTH_SOCK"))}
    env |= {"HOME": str(home), "HPCML_SITE_CONFIG": "/nonexistent", "XDG_CONFIG_HOME": str(home / ".config")}
    lab = Lab(root, home, laptop, cluster, env, remote_env)
    at = "127.0.0.1"
    remotes = [
        toml_remote("testbed", lab, host=at, port=sshd.port, user="root", identity_file=key),
        toml_remote("slow", lab, host=at, port=sshd.port, user="root", identity_file=key,
                    hpcml=str(slow)),
        toml_remote("viajump", lab, host="cluster-via-jump"),
        toml_remote("unknown", lab, host=at, port=sshd.port, user="root", identity_file=key,
                    known_hosts=[str(root / "empty_known_hosts")]),
        toml_remote("wrongkey", lab, host=at, port=sshd.port, user="root", identity_file=key,
                    known_hosts=[str(root / "wrong_known_hosts")]),
        toml_remote("nokey", lab, host=at, port=sshd.port, user="root", identity_file=str(root / "stranger")),
        toml_remote("shared", lab, host=at, port=sshd.port, user="root", identity_file=key,
                    catalogs=[str(SHARED_CATALOG / "cat")]),
        toml_remote("nohpcml", lab, host=at, port=sshd.port, user="root", identity_file=key,
                    hpcml="/nonexistent/hpcml"),
        toml_remote("closed", lab, host=at, port=free_port(), user="root", identity_file=key, connect_timeout=5),
    ]
    (home / ".config" / "hpcml" / "config.toml").write_text("\n".join(remotes))
    return lab


def cluster_settings(lab: Lab) -> config.Settings:
    """The settings the cluster's hpcml runs with, for checks made directly on the cluster side."""
    return config.load(env={"HOME": str(lab.home), "HPCML_CATALOGS": str(lab.root / "catalog"),
                            "HPCML_EXECUTOR": "slurm", **lab.remote_env})


def test_run_status_logs_runs_and_sync_through_the_remote(lab: Lab) -> None:
    wf = write_workflow(lab, "demo", """\
        hello:
          run: echo "hello $GREETING" > {out}/h.txt
          secrets: [GREETING]
        after:
          needs: [hello]
          run: cat {in.hello}/h.txt
        """)
    (wf.parent / "notes.txt").write_text("to be deleted\n")
    (wf.parent / ".env").write_text("GREETING=never synced\n")
    r = hpcml(lab, "testbed", "run", "workflow.yaml", "--watch", cwd=wf.parent, env={"GREETING": SECRET})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 sent" in r.stderr and "2 completed" in r.stdout
    remote_dir = lab.cluster / "demo"
    assert not (remote_dir / ".env").exists()  # files that usually hold credentials stay home
    assert not list((lab.cluster / ".hpcml-secrets").iterdir())  # the secrets file is gone

    # status: the same run through the remote and on the cluster side
    r = hpcml(lab, "testbed", "status", "--json", cwd=wf.parent)
    assert r.returncode == 0, r.stderr
    via_ssh = json.loads(r.stdout)
    direct = api.status(directory=str(remote_dir), settings=cluster_settings(lab))
    assert via_ssh["run"] == direct.run_id and via_ssh["counts"] == direct.counts == {"completed": 2}

    # logs: the secret arrived as written (quotes, $, ;), through the remote and directly
    r = hpcml(lab, "testbed", "logs", "after", cwd=wf.parent)
    assert r.returncode == 0 and f"hello {SECRET}" in r.stdout, r.stdout + r.stderr
    [(_label, log)] = api.logs("after", directory=str(remote_dir))
    assert f"hello {SECRET}" in Path(log).read_text()
    r = hpcml(lab, "testbed", "runs", "--json", cwd=wf.parent)
    assert [x["run_id"] for x in json.loads(r.stdout)] == [x.run_id for x in api.runs_history(directory=str(remote_dir))]

    # sync: unchanged sends nothing; one change sends one file and removes a deleted one
    r = hpcml(lab, "testbed", "plan", "workflow.yaml", cwd=wf.parent)
    assert r.returncode == 0 and "0 sent (0 bytes), 3 unchanged, 0 removed" in r.stderr, r.stderr
    (wf.parent / "notes.txt").unlink()
    wf.write_text(wf.read_text() + "# a comment\n")
    r = hpcml(lab, "testbed", "plan", "workflow.yaml", cwd=wf.parent)
    assert r.returncode == 0 and "1 sent" in r.stderr and "1 unchanged, 1 removed" in r.stderr, r.stderr
    assert not (remote_dir / "notes.txt").exists() and (remote_dir / ".hpcml").is_dir()

    r = hpcml(lab, "testbed", "catalog", "list", "--json", cwd=wf.parent)
    assert r.returncode == 0 and [row["name"] for row in json.loads(r.stdout)] == ["bb"], r.stdout + r.stderr
    r = hpcml(lab, "testbed", "catalog", "verify", cwd=wf.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    r = hpcml(lab, "testbed", "build", "workflow.yaml", cwd=wf.parent)
    assert r.returncode == 0 and "cached" in r.stdout + r.stderr, r.stdout + r.stderr
    r = hpcml(lab, "testbed", "logs", "hello", "-f", cwd=wf.parent)  # an ended task: prints and returns
    assert r.returncode == 0 and "exited with 0" in r.stdout, r.stdout + r.stderr
    # the secret is in the task's output only, never in a synced file
    for f in remote_dir.rglob("*"):
        if f.is_file() and ".hpcml" not in f.relative_to(remote_dir).parts:
            assert SECRET.encode() not in f.read_bytes(), f


def test_the_ssh_runner_passes_every_word_as_written(sshd: Sshd, tmp_path: Path) -> None:
    remote = Remote("t", sshd.host, user=sshd.username, port=sshd.port, identity_file=str(sshd.key_path))
    hop = connect(resolve(remote, tmp_path), [str(sshd.known_hosts)])
    try:
        runner = SshRunner(hop.client)
        words = ["a b", "it's", '"q"', "$HOME", "x;y", "`id`", "*"]
        where = tmp_path / "d i r;$x 'q'"
        where.mkdir()
        done = runner.run(["printf", "%s|", *words], cwd=str(where), env={"K": "v;$x"})
        assert done.ok and done.stdout == "".join(w + "|" for w in words), done
        assert runner.run(["sh", "-c", 'printf %s "$K"; pwd'], cwd=str(where), env={"K": "v w;$x"}).stdout == \
            f"v w;$x{where}\n"
        assert runner.run(["sh", "-c", "exit 7"]).returncode == 7
        log = tmp_path / "out.log"
        logged = runner.run_logged(["sh", "-c", "echo out; echo err >&2; exit 3"], log_path=str(log))
        assert logged.returncode == 3 and "out" in log.read_text() and "err" in logged.stderr
        agent = runner.run(["sh", "-c", 'echo "${SSH_AUTH_SOCK:-none}"']).stdout.strip()
        assert agent == "none"  # no agent forwarding
        # secrets travel over SFTP into a file only its owner can read, from the first byte
        secret_file = tmp_path / "secrets" / "x.env"
        with hop.client.open_sftp() as sftp:
            put_private(sftp, str(secret_file), b"K='v'\n")
        assert secret_file.stat().st_mode & 0o777 == 0o600 and secret_file.parent.stat().st_mode & 0o777 == 0o700
        # the runner seam: the SLURM client, unchanged, over SSH
        assert Slurm(runner).version() == Slurm(LocalRunner()).version()
        assert Slurm(runner).show_config()["ClusterName"] == "hpcml"
    finally:
        hop.close()


@pytest.mark.slow
def test_the_quickstart_from_a_laptop_directory(lab: Lab) -> None:
    """The quickstart (numpy image: built on the cluster side once per machine, in the shared
    catalog, when it is not there yet) run from the laptop and seen from both sides."""
    SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
    work = lab.laptop / "workflows"
    shutil.copytree(REPO / "workflows", work, ignore=shutil.ignore_patterns(".hpcml"))
    r = hpcml(lab, "shared", "run", "quickstart.yaml", "--watch", cwd=work, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 completed" in r.stdout
    r = hpcml(lab, "shared", "status", "--workflow", "quickstart.yaml", "--json", cwd=work)
    direct = api.status(workflow=str(lab.cluster / "workflows" / "quickstart.yaml"))
    assert r.returncode == 0 and json.loads(r.stdout)["run"] == direct.run_id and direct.ok, r.stdout + r.stderr
    r = hpcml(lab, "shared", "logs", "evaluate", "--workflow", "quickstart.yaml", cwd=work)
    assert r.returncode == 0 and "exited with 0" in r.stdout, r.stdout + r.stderr


def test_cancel_through_the_remote_and_on_the_cluster(lab: Lab) -> None:
    wf = write_workflow(lab, "slowdemo", "long:\n  run: sleep 300\n")
    remote_dir = str(lab.cluster / "slowdemo")
    settings = cluster_settings(lab)
    # Ctrl-C while watching: the run goes on, and the message says how to follow it
    proc = subprocess.Popen([str(HPCML), "-r", "testbed", "run", "workflow.yaml", "--watch"], cwd=wf.parent,
                            env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = Lines(proc)
    try:
        err.wait_for("submitted long", 60)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err.thread.join(5)
    assert proc.returncode == 130, err.lines
    assert "goes on on testbed: follow it with `hpcml -r testbed status" in "".join(err.lines)
    live = api.status(directory=remote_dir, settings=settings)
    assert live.counts in ({"pending": 1}, {"running": 1}), live.counts
    r = hpcml(lab, "testbed", "cancel", cwd=wf.parent)
    assert r.returncode == 0 and "cancelled 1 job" in r.stdout, r.stdout + r.stderr
    # second run: cancelled on the cluster side, seen through the remote
    r = hpcml(lab, "testbed", "run", "workflow.yaml", "--detach", cwd=wf.parent)
    assert r.returncode == 0, r.stderr
    _run, jobs = api.cancel(directory=remote_dir, settings=settings)
    assert len(jobs) == 1
    deadline = time.monotonic() + 60
    while True:
        r = hpcml(lab, "testbed", "status", "--json", cwd=wf.parent)
        st = json.loads(r.stdout)
        if st["finished"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 1 and st["counts"] == {"cancelled": 1}, r.stdout


def test_retry_and_part_of_a_run_through_the_remote(lab: Lab) -> None:
    """`hpcml -r NAME retry` reruns only what failed (with the secret it needs, over SFTP),
    and `run --only/--force` reruns only the step named, both followed from the laptop."""
    gate = lab.root / "retry-gate"
    wf = write_workflow(lab, "retrydemo", f"""\
        flaky:
          run: echo "$GREETING" >> {{out}}/ran; test -e {gate}
          secrets: [GREETING]
        after:
          needs: [flaky]
          run: echo x >> {{out}}/ran
        other:
          run: echo x >> {{out}}/ran
        """)
    tasks = lab.cluster / "retrydemo" / ".hpcml" / "tasks"

    def ran() -> dict[str, int]:
        return {p.parts[-4]: len(p.read_text().splitlines()) for p in tasks.glob("*/*/out/ran")}

    r = hpcml(lab, "testbed", "run", "workflow.yaml", "--watch", cwd=wf.parent, env={"GREETING": SECRET})
    assert r.returncode == 1 and "1 failed" in r.stdout and "1 upstream failed" in r.stdout, r.stdout + r.stderr
    first = json.loads(hpcml(lab, "testbed", "status", "--json", cwd=wf.parent).stdout)["run"]
    (lab.laptop / "norun").mkdir()
    r = hpcml(lab, "testbed", "retry", "-C", "norun", cwd=lab.laptop)
    assert r.returncode == 1 and "failed (exit 1): hpcml: error: no runs in" in r.stderr, r.stderr
    r = hpcml(lab, "testbed", "retry", "--watch", cwd=wf.parent)  # the secret is missing here
    assert r.returncode != 0 and "secret(s) GREETING are not set" in r.stderr and "synced" not in r.stderr, r.stderr
    gate.touch()
    r = hpcml(lab, "testbed", "retry", first, "--watch", cwd=wf.parent, env={"GREETING": SECRET})
    assert r.returncode == 0 and f"retry of run {first}: flaky/0, after/0" in r.stderr, r.stdout + r.stderr
    assert "2 completed" in r.stdout, r.stdout
    assert ran() == {"flaky": 2, "after": 1, "other": 1}
    assert f"{SECRET}\n{SECRET}\n" in next(tasks.glob("flaky/*/out/ran")).read_text()
    r = hpcml(lab, "testbed", "retry", "--watch", cwd=wf.parent, env={"GREETING": SECRET})
    assert r.returncode != 0 and "nothing to retry" in r.stderr, r.stdout + r.stderr
    r = hpcml(lab, "testbed", "run", "workflow.yaml", "--only", "other", "--force", "other", "--watch",
              cwd=wf.parent, env={"GREETING": SECRET})
    assert r.returncode == 0 and "1 completed" in r.stdout, r.stdout + r.stderr
    assert ran() == {"flaky": 2, "after": 1, "other": 2}
    assert not list((lab.cluster / ".hpcml-secrets").iterdir())


def test_the_same_run_through_a_jump_host(lab: Lab, jump: tuple[int, Path, Path]) -> None:
    _port, _key, log = jump
    wf = write_workflow(lab, "jumpdemo", "one:\n  run: echo via jump\n")
    r = hpcml(lab, "viajump", "run", "workflow.yaml", "--watch", cwd=wf.parent)
    assert r.returncode == 0 and "1 completed" in r.stdout, r.stdout + r.stderr
    text = log.read_text()
    assert "Accepted publickey for root" in text  # the jump host carried the connection


@pytest.mark.parametrize(
    ("remote", "message"),
    [
        ("unknown", ["is unknown", "SHA256:", "empty_known_hosts"]),
        ("wrongkey", ["HOST KEY CHANGED", "SHA256:", "wrong_known_hosts", "ssh-keygen -R"]),
        ("nokey", ["accepted none of the keys", "never asks for a password", "ssh-keygen"]),
        ("closed", ["cannot reach root@127.0.0.1:", "Connection refused"]),
    ],
)
def test_refused_connections_say_why_and_submit_nothing(lab: Lab, remote: str, message: list[str]) -> None:
    wf = write_workflow(lab, f"refused-{remote}", "one:\n  run: echo never\n")
    r = hpcml(lab, remote, "run", "workflow.yaml", "--detach", cwd=wf.parent, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    for part in message:
        assert part in r.stderr, r.stderr
    assert not (lab.cluster / f"refused-{remote}").exists()
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    assert f"hpcml.refused-{remote}." not in queued


def test_a_cluster_without_hpcml_says_how_to_name_it(lab: Lab) -> None:
    wf = write_workflow(lab, "nohpcml", "one:\n  run: echo never\n")
    r = hpcml(lab, "nohpcml", "run", "workflow.yaml", "--detach", cwd=wf.parent, timeout=60)
    assert r.returncode == 1 and "the cluster has no command '/nonexistent/hpcml'" in r.stderr, r.stderr


def sshd_processes_of(client_pid: int, port: int) -> list[int]:
    """The sshd processes serving the SSH connection(s) that process `client_pid` holds to `port`."""
    lines = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    mine = {ln.split()[2].rsplit(":", 1)[1] for ln in lines
            if f"pid={client_pid}," in ln and ln.split()[3].endswith(f":{port}")}
    pids: set[int] = set()
    for ln in lines:
        local, peer = ln.split()[2], ln.split()[3]
        if local.endswith(f":{port}") and peer.rsplit(":", 1)[1] in mine:
            pids.update(int(p.split(",")[0]) for p in ln.split("pid=")[1:])
    return sorted(pids)


class Lines:
    """A process's stderr, read line by line in a thread."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        assert proc.stderr is not None
        self.thread = threading.Thread(target=lambda: self.lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        self.thread.start()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in ln for ln in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} in {self.lines}"
            time.sleep(0.1)


def test_a_connection_killed_mid_watch_is_resumed(lab: Lab, sshd: Sshd) -> None:
    wf = write_workflow(lab, "watchdemo", "nap:\n  run: sleep 12\n")
    proc = subprocess.Popen([str(HPCML), "-r", "testbed", "run", "workflow.yaml", "--watch"], cwd=wf.parent,
                            env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = Lines(proc)
    try:
        err.wait_for("submitted nap", 60)
        time.sleep(3)  # watching now
        victims = sshd_processes_of(proc.pid, sshd.port)
        assert victims, "no sshd process found for the client's connection"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out = proc.stdout.read()  # type: ignore[union-attr]  # stderr is Lines' own
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err.thread.join(5)
    assert proc.returncode == 0, out + "".join(err.lines)
    assert any("reconnected" in ln for ln in err.lines), err.lines
    assert "1 completed" in out


def test_a_submission_killed_midway_is_not_duplicated(lab: Lab, sshd: Sshd) -> None:
    name = f"subdemo{os.getpid()}"  # SLURM's accounting outlives this test's files
    wf = write_workflow(lab, name, "a:\n  run: 'true'\nb:\n  run: 'true'\nc:\n  run: 'true'\n")
    proc = subprocess.Popen([str(HPCML), "-r", "slow", "run", "workflow.yaml", "--detach"], cwd=wf.parent,
                            env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = Lines(proc)
    try:
        err.wait_for("submitted a: job", 90)
        for pid in sshd_processes_of(proc.pid, sshd.port):
            os.kill(pid, signal.SIGKILL)
        out = proc.stdout.read()  # type: ignore[union-attr]  # stderr is Lines' own
        proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
    err.thread.join(5)
    text = out + "".join(err.lines)
    assert proc.returncode == 0, text
    assert "submitting again" in text
    # every step has exactly one job in SLURM, whichever run submitted it (squeue keeps
    # finished jobs for MinJobAge; sacct may lag behind the newest ones)
    rows = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    rows += subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobID,JobName"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    per_step: dict[str, set[str]] = {}
    for ln in rows:
        job_id, _, job_name = ln.strip().partition("|")
        if job_name.startswith(f"hpcml.{name}."):
            per_step.setdefault(job_name.rsplit(".", 1)[1], set()).add(job_id)
    assert per_step and all(len(ids) == 1 for ids in per_step.values()), per_step
    assert sorted(per_step) == ["a", "b", "c"]
