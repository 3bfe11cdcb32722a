"""Issue 12, the catalog races, with two real Unix users sharing a group and a lab catalog
(root:GROUP 2775, as docs/catalog.md sets one up): finding 2 (a member swaps another's
build directory) and finding 4 (a stopped builder's lock is taken over).

The users run this checkout's hpcml with the system python3.11 (PYTHONPATH: the checkout
and the virtualenv's site-packages, both world-readable), as the onboarding test's user
does with a wheel; `User` is that test's. Building needs their fakeroot mapping, which
`useradd` writes to /etc/subuid. The second "host" of finding 4 is a UTS namespace with
another host name (`unshare --uts`), so the lock's owner looks remote, as on a cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_onboarding import User
from test_run_slurm import REPO
from testbed import Apptainer, testbed_unavailable as unavailable

from hpcml import plan
from hpcml.errors import HpcmlError
from hpcml.images.catalog import Catalog
from hpcml.images.search import CatalogPath
from hpcml.spec import checker as spec

pytestmark = [pytest.mark.testbed]

PYTHON = "/usr/bin/python3.11"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@dataclass(frozen=True)
class Lab:
    group: str
    a: User
    b: User
    root: Path  # public directory holding homes and catalogs


@pytest.fixture(scope="module")
def lab(apptainer: Apptainer) -> Iterator[Lab]:
    """Group GROUP with two fresh members, A and B, each with a HOME and a fakeroot mapping."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.access(PYTHON, os.X_OK):
        unavailable(f"two users need root, runuser and {PYTHON}")
    tag = secrets.token_hex(3)
    group = f"hpcml-g{tag}"
    root = Path(tempfile.mkdtemp(prefix="hpcml-lab-"))
    root.chmod(0o755)
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    users: list[User] = []
    site = f"{REPO}:{REPO}/.venv/lib/python3.11/site-packages"
    try:
        for who in ("a", "b"):
            name = f"hpcml-{who}{tag}"
            home = root / name
            subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                            "-G", group, name], check=True, capture_output=True)
            home.mkdir(mode=0o700)
            shutil.chown(home, name, name)
            env = {"HOME": str(home), "USER": name, "LOGNAME": name, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
                   "PYTHONPATH": site, "HPCML_SITE_CONFIG": "/nonexistent", "HPCML_CONFIG": "/nonexistent",
                   "HPCML_APPTAINER": apptainer.binary, "HPCML_BUILD_FLAGS": " ".join(apptainer.build_flags),
                   "HPCML_EXEC_FLAGS": " ".join(apptainer.exec_flags), "HPCML_CA_BUNDLE": "none"}
            users.append(User(name, home, env))
        yield Lab(group, users[0], users[1], root)
    finally:
        for u in users:
            subprocess.run(["userdel", "--force", u.name], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def lab_catalog(lab: Lab, name: str) -> Path:
    """A lab catalog as the admin makes it: root:GROUP, 2775."""
    cat = lab.root / name
    cat.mkdir()
    shutil.chown(cat, "root", lab.group)
    cat.chmod(0o2775)
    return cat


def workflow(user: User, post: str) -> Path:
    """A scratch + busybox image whose %post runs `post`, in the user's home."""
    wf = user.home / "wf"
    wf.mkdir(exist_ok=True)
    shutil.copy(BUSYBOX, wf / "busybox")
    (wf / "workflow.yaml").write_text(
        "hpcml: 1\nname: race\nimages:\n  base:\n    from: scratch\n    shell: sh\n"
        "    files: {busybox: /bin/sh}\n"
        f"    post: |\n      busybox --install -s /bin\n      {post}\n"
        "steps:\n  hello:\n    image: base\n    run: 'true'\n")
    subprocess.run(["chown", "-R", f"{user.name}:{user.name}", str(wf)], check=True)
    return wf / "workflow.yaml"


def hpcml_argv(user: User, *args: str) -> list[str]:
    env = [f"{k}={v}" for k, v in user.env.items()]
    return ["runuser", "-u", user.name, "--", "env", "-i", *env, PYTHON, "-m", "hpcml.cli", *args]


def wait_for(predicate: object, timeout: float = 120, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def build_dirs(cat: Path) -> list[Path]:
    return sorted(p for p in (cat / "tmp").glob("build-*") if p.is_dir()) if (cat / "tmp").is_dir() else []


ATTACK = r"""
import errno, json, os, sys
cat, secret = sys.argv[1], sys.argv[2]
tmp = os.path.join(cat, "tmp")
victim = sorted(d for d in os.listdir(tmp) if d.startswith("build-"))[0]
d = os.path.join(tmp, victim)
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "done"
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
attempt("rename_build_dir", lambda: os.rename(d, d + "-stolen"))
attempt("remove_build_dir", lambda: os.rmdir(d))
attempt("plant_symlink_inside", lambda: os.symlink(secret, os.path.join(d, "build.log.new")))
attempt("list_build_dir", lambda: os.listdir(d))
# The catalog's root is the admin's 2775 (not sticky): tmp/ itself can be moved away and a
# trap made at the build directory's old path. The build must not notice.
attempt("rename_tmp", lambda: os.rename(tmp, tmp + "-old"))
if res["rename_tmp"] == "done":
    os.mkdir(tmp)
    os.mkdir(d)
    for name in ("build.log", "base.sif", "base.def", "in"):
        os.symlink(secret, os.path.join(d, name))
    os.chmod(d, 0o777)
print(json.dumps(res))
"""


def test_member_cannot_swap_a_running_build(lab: Lab) -> None:
    """Finding 2: B renames, removes or plants nothing in A's build; moving the whole tmp/
    away and planting `build.log -> A's key` at the old path changes nothing: A's build
    publishes its own log and SIF, and A's key is neither published nor written."""
    cat = lab_catalog(lab, "cat-swap")
    ssh = lab.a.home / ".ssh"
    ssh.mkdir(mode=0o700)
    key = ssh / "id_rsa"
    key.write_text("A-PRIVATE-KEY\n")
    key.chmod(0o600)
    subprocess.run(["chown", "-R", f"{lab.a.name}:{lab.a.name}", str(ssh)], check=True)
    wf = workflow(lab.a, "sleep 6")
    env = lab.a.env | {"HPCML_CATALOGS": str(cat), "HPCML_CACHE_DIR": str(lab.a.home / "cache")}
    a_user = User(lab.a.name, lab.a.home, env)
    builder = subprocess.Popen(hpcml_argv(a_user, "build", str(wf)), cwd=lab.a.home, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: builder.poll() is not None or any((d / "in").exists() for d in build_dirs(cat)),
                 what="A's build to start")
        assert builder.poll() is None, builder.communicate()[0]
        tmp_mode = (cat / "tmp").stat().st_mode
        assert tmp_mode & 0o1000, oct(tmp_mode)  # sticky
        assert all(d.stat().st_mode & 0o777 == 0o700 for d in build_dirs(cat))
        script = lab.b.home / "attack.py"
        script.write_text(ATTACK)
        shutil.chown(script, lab.b.name)
        attack = lab.b.run([PYTHON, str(script), str(cat), str(key)])
        assert attack.returncode == 0, attack.stdout + attack.stderr
        res = json.loads(attack.stdout)
        assert res["rename_build_dir"] == "EPERM" and res["remove_build_dir"] == "EPERM", res
        assert res["plant_symlink_inside"] == "EACCES" and res["list_build_dir"] == "EACCES", res
        out, _ = builder.communicate(timeout=300)
    finally:
        if builder.poll() is None:
            builder.kill()
    assert builder.returncode == 0, out
    entries = list(Catalog(cat).entries())
    assert len(entries) == 1
    log = Catalog(cat).log_path(entries[0].key).read_text()
    assert "A-PRIVATE-KEY" not in log and "Build complete" in log
    assert key.read_text() == "A-PRIVATE-KEY\n"
    done = lab.a.run(["/bin/sh", "-c", f"{' '.join(a_user.env['HPCML_APPTAINER'].split())} exec "
                      f"{a_user.env['HPCML_EXEC_FLAGS']} --unsquash {entries[0].sif} /bin/sh -c 'echo ran'"])
    assert done.stdout.strip() == "ran", done.stdout + done.stderr


def test_stopped_builder_that_lost_its_lock_publishes_nothing(lab: Lab) -> None:
    """Finding 4: A holds the build lock and is stopped (SIGSTOP) past lock_stale_after; B, on
    another host, breaks the lock, builds and publishes. A, resumed, publishes nothing,
    replaces nothing and says it lost the lock; a reader polling meanwhile never sees a
    corrupt image."""
    cat = lab_catalog(lab, "cat-lock")
    common = {"HPCML_CATALOGS": str(cat), "HPCML_LOCK_STALE_AFTER": "3"}
    a = User(lab.a.name, lab.a.home, lab.a.env | common | {"HPCML_CACHE_DIR": str(lab.a.home / "cache")})
    b = User(lab.b.name, lab.b.home, lab.b.env | common | {"HPCML_CACHE_DIR": str(lab.b.home / "cache")})
    wf_a, wf_b = workflow(a, "sleep 2"), workflow(b, "sleep 2")
    key = plan.build(spec.load(wf_a)).images["base"].key
    assert plan.build(spec.load(wf_b)).images["base"].key == key  # the same image for both
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        path = CatalogPath([Catalog(cat)], Path(tempfile.mkdtemp(prefix="hpcml-reader-")))
        while not stop.is_set():
            try:
                entry = path.lookup(key)
                if entry is not None:
                    path.check(entry, force=True)
            except (HpcmlError, OSError) as err:
                problems.append(str(err))
            time.sleep(0.05)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    first = subprocess.Popen(hpcml_argv(a, "build", str(wf_a)), cwd=a.home, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: first.poll() is not None or ((cat / "locks" / f"{key}.lock").exists()
                                                      and any((d / "in").exists() for d in build_dirs(cat))),
                 what="A to hold the lock")
        assert first.poll() is None, first.communicate()[0]
        pid = int(subprocess.run(["pgrep", "-u", a.name, "-f", "hpcml.cli build"], capture_output=True,
                                 text=True, check=True).stdout.split()[0])
        os.kill(pid, signal.SIGSTOP)
        time.sleep(4)  # past lock_stale_after by the file server's clock
        other_host = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', "hpcml-other-host",
                      *hpcml_argv(b, "build", str(wf_b))]
        second = subprocess.run(other_host, cwd=b.home, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        published = Catalog(cat).get(key)
        assert published is not None
        inode, digest = published.sif.stat().st_ino, published.manifest.sha256
        os.kill(pid, signal.SIGCONT)
        os.kill(first.pid, signal.SIGCONT)  # runuser stops itself when its child stops
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
        stop.set()
    assert first.returncode != 0 and "lost the build lock" in out, out
    entry = Catalog(cat).get(key)
    assert entry is not None and entry.sif.stat().st_ino == inode and entry.manifest.sha256 == digest
    watcher.join(timeout=5)
    assert not [p for p in problems if "corrupt" in p], problems
    assert sys.executable  # the reader ran in this (root) process
