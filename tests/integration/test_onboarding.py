"""A researcher on the cluster, not root: hpcml installed from the built wheel with
`pip install --user`, and separately `hpcml.pyz` run with the system python3, each running
`validate`, `plan` and the quickstart on the local executor and on the testbed's SLURM as an
unprivileged Unix user with an empty HOME. Then `hpcml init`'s CPU template on SLURM.

What the user gets from the "lab": a lab config file (HPCML_SITE_CONFIG, as an admin's
/etc/hpcml/config.toml would be) naming the testbed's shared catalog, where the quickstart's
image was built once by root (the admin), and `exec_flags = ["--unsquash"]`: this
machine's /dev/fuse is root-only, so Apptainer cannot mount a SIF for a plain user and
unpacks it instead (docs/install.md lists this error and the setting). Nothing is built
as the user, so no fakeroot mapping (/etc/subuid) is needed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_run_slurm import REPO, settings_env
from testbed import testbed_unavailable as unavailable

from hpcml import api, config

if TYPE_CHECKING:
    from testbed import Apptainer, SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

SHARED_CATALOG = Path("/var/cache/hpcml-testbed/catalog")


def system_python() -> str:
    """The system's python3 if it is >= 3.11, else the newest /usr/bin/python3.N >= 3.11."""
    found: list[tuple[tuple[int, int], str]] = []
    for path in ["/usr/bin/python3", *sorted(map(str, Path("/usr/bin").glob("python3.[0-9]*")))]:
        if not re.fullmatch(r"/usr/bin/python3(\.\d+)?", path) or not os.access(path, os.X_OK):
            continue
        out = subprocess.run([path, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0:
            found.append((tuple(map(int, out.stdout.split())), path))  # type: ignore[arg-type]
    if any(v >= (3, 11) for v, p in found if p == "/usr/bin/python3"):
        return "/usr/bin/python3"
    newer = sorted((v, p) for v, p in found if v >= (3, 11))
    if not newer:
        pytest.skip(f"no system python >= 3.11 (found {found}); hpcml needs 3.11")
    return newer[-1][1]


@dataclass(frozen=True)
class User:
    name: str
    home: Path
    env: dict[str, str]

    def run(self, argv: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run argv as this user with a clean environment (only what a login would set)."""
        env = [f"{k}={v}" for k, v in self.env.items()]
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *env, *argv],
            cwd=cwd or self.home, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def ok(self, argv: list[str], cwd: Path | None = None, timeout: float = 300) -> str:
        done = self.run(argv, cwd, timeout)
        assert done.returncode == 0, f"{argv} as {self.name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="hpcml-onboarding-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dist(public_dir: Path) -> dict[str, Path]:
    """`make dist`'s products, built here: the wheel, hpcml.pyz, and a wheelhouse of the
    wheel's dependencies so the user's install needs no index."""
    if shutil.which("runuser") is None or os.geteuid() != 0:
        unavailable("creating and acting as an unprivileged user needs root and runuser")
    out = public_dir / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(out.glob("hpcml-*.whl"))
    pyz = out / "hpcml.pyz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_zipapp.py"), str(wheel), "-o", str(pyz)],
                   check=True, capture_output=True, timeout=300)
    house = public_dir / "wheelhouse"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return {"wheel": wheel, "pyz": pyz, "wheelhouse": house}


@pytest.fixture(scope="module")
def lab(apptainer: Apptainer, slurm_cluster: SlurmCluster, public_dir: Path) -> Path:
    """The lab config file, and the quickstart image in the shared catalog (built by root
    once per machine, as an admin would, if it is not there yet)."""
    SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
    settings = config.load(env={"HOME": str(public_dir), **settings_env(apptainer, SHARED_CATALOG)})
    report = api.build(REPO / "workflows" / "quickstart.yaml", settings=settings)
    assert not report.failed, report.failure_message
    for d in (SHARED_CATALOG, SHARED_CATALOG / "cat"):
        d.chmod(d.stat().st_mode | 0o755)
    path = public_dir / "lab" / "config.toml"
    path.parent.mkdir(mode=0o755)
    path.write_text(
        "# what a lab admin puts in /etc/hpcml/config.toml\n"
        f'catalogs = ["~/.cache/hpcml/images", "{SHARED_CATALOG / "cat"}"]\n'
        'exec_flags = ["--unsquash"]\n'
        f'apptainer = "{apptainer.binary}"\n'
    )
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def user(public_dir: Path, lab: Path) -> Iterator[User]:
    """A fresh unprivileged user whose HOME is empty (no skeleton files)."""
    name = f"hpcml-u{secrets.token_hex(3)}"
    home = public_dir / name
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash", name],
                   check=True, capture_output=True)
    home.mkdir(mode=0o755)
    shutil.chown(home, name, name)
    env = {
        "HOME": str(home), "USER": name, "LOGNAME": name, "LANG": "C.UTF-8",
        "PATH": f"{home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
        "HPCML_SITE_CONFIG": str(lab),
        "PIP_CONFIG_FILE": os.devnull,  # this machine's pip.conf names root's indexes
    }
    try:
        assert not any(home.iterdir())
        yield User(name, home, env)
    finally:
        subprocess.run(["scancel", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", "--force", name], capture_output=True, check=False)


def quickstart(user: User, where: str) -> Path:
    """A copy of workflows/ in the user's home, owned by the user."""
    dest = user.home / where
    shutil.copytree(REPO / "workflows", dest, ignore=shutil.ignore_patterns(".hpcml"))
    subprocess.run(["chown", "-R", f"{user.name}:{user.name}", str(dest)], check=True)
    return dest / "quickstart.yaml"


def run_quickstart(user: User, hpcml: list[str], where: str, executor: str) -> None:
    """validate, plan and run the quickstart as the user; the result is the user's."""
    wf = quickstart(user, where)
    assert user.ok([*hpcml, "validate", str(wf)]).strip() == f"{wf}: ok (3 steps, 1 image)"
    plan = json.loads(user.ok([*hpcml, "plan", str(wf), "--json"]))
    assert [s["name"] for s in plan["steps"]] == ["prepare", "train", "evaluate"]
    done = user.run([*hpcml, "run", str(wf), "--executor", executor, "--watch"], timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    st = json.loads(user.ok([*hpcml, "status", "--json", "-C", str(wf.parent)]))
    assert st["ok"] and st["executor"] == executor and len(st["tasks"]) == 5, st
    assert not list(user.home.glob(".cache/hpcml/images/**/*.sif"))  # reused from the lab catalog
    summaries = list((wf.parent / ".hpcml" / "tasks" / "evaluate").glob("*/out/*.json"))
    assert summaries and all(p.stat().st_uid == user.home.stat().st_uid for p in summaries)


def test_wheel_installed_with_pip_user(user: User, dist: dict[str, Path], slurm_cluster: SlurmCluster) -> None:
    python = system_python()
    # Debian marks its python "externally managed" (PEP 668): pip refuses --user installs
    # unless told they are wanted; they go to ~/.local only (docs/install.md says so).
    env = {"PIP_BREAK_SYSTEM_PACKAGES": "1"}
    install = [*(f"{k}={v}" for k, v in env.items())]
    user.ok(["env", *install, python, "-m", "pip", "install", "--user", "--no-index",
             "--find-links", str(dist["wheelhouse"]), str(dist["wheel"])], timeout=300)
    version = user.ok(["hpcml", "--version"])
    assert version.startswith(f"hpcml 0.1.0 (installed: {user.home}/.local/lib/python3")
    run_quickstart(user, ["hpcml"], "wheel-local", "local")
    run_quickstart(user, ["hpcml"], "wheel-slurm", "slurm")


def test_zipapp_with_system_python(user: User, dist: dict[str, Path], slurm_cluster: SlurmCluster) -> None:
    python = system_python()
    # -s: not the user's site-packages, where the wheel test's `pip --user` put paramiko
    # (a zipapp uses a paramiko it can import; this test shows the one without)
    pyz = [python, "-s", str(dist["pyz"])]
    version = user.ok(pyz + ["--version"])
    assert version.startswith(f"hpcml 0.1.0 (zipapp: {dist['pyz']}") and "without paramiko" in version
    assert "yaml parser: pure Python" in version  # the bundled PyYAML has no compiled part
    # paramiko is left out: the one command that needs it says so instead of a traceback
    config = user.home / ".config" / "hpcml" / "config.toml"
    user.ok(["mkdir", "-p", str(config.parent)])
    user.ok(["sh", "-c", f"printf '[remotes.c]\\nhost = \"127.0.0.1\"\\n' > {config}"])
    remote = user.run(pyz + ["--remote", "c", "status"])
    assert remote.returncode == 1 and "needs paramiko, which hpcml.pyz does not carry" in remote.stderr, remote.stderr
    user.ok(["rm", str(config)])
    run_quickstart(user, pyz, "pyz-local", "local")
    run_quickstart(user, pyz, "pyz-slurm", "slurm")


def test_sbatch_works_for_the_user(user: User, slurm_cluster: SlurmCluster) -> None:
    """The precondition the runs above rely on: munge, srun and sbatch as a plain user."""
    uid = str(user.home.stat().st_uid)
    assert user.ok(["srun", "--quiet", "id", "-u"], timeout=120).strip() == uid
    job = user.ok(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"], timeout=60).strip()
    assert job.split(";")[0].isdigit()


def test_init_cpu_template_runs_on_slurm(apptainer: Apptainer, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """`hpcml init` in an empty directory, as written, to completion on the testbed. Its
    base image (debootstrap + python3) is kept in the shared catalog, so only the first
    run on a machine builds it (about a minute); the app image (src/ on top) builds each
    time in seconds."""
    SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
    settings = config.load(env={"HOME": str(tmp_path), **settings_env(apptainer, SHARED_CATALOG)})
    project = tmp_path / "my-sweep"
    result = api.init(project)
    assert result.template == "cpu-sweep" and result.adopted is None
    outcome = api.run(project / "workflow.yaml", executor="slurm", settings=settings, poll_s=2)
    assert outcome.ok, outcome.status and outcome.status.as_dict()
    summary = next((project / ".hpcml" / "tasks" / "summarize").glob("*/out/summary.json"))
    doc = json.loads(summary.read_text())
    assert len(doc["runs"]) == 3 and abs(doc["best"]["a"] - 3) < 0.5
