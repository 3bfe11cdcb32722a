"""Real `apptainer build`s through images.ensure and the catalog (tiny busybox images).

Needs the testbed's apptainer (conftest fixture `apptainer`) and busybox-static; builds
and runs use the testbed's flags (--fakeroot / --userns here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hpcml import config, plan
from hpcml.render import deffile
from hpcml.images import ensure as images
from hpcml.spec import checker as spec
from hpcml.clients.apptainer import Apptainer
from hpcml.images.catalog import Catalog
from hpcml.errors import BuildError, CatalogError
from hpcml.clients.runner import LocalRunner

APPTAINER = shutil.which("apptainer")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# The `apptainer` fixture (conftest) brings apptainer up, or skips with the reason (fails
# under HPCML_REQUIRE_TESTBED=1); `up --only apptainer` also installs busybox-static.
pytestmark = [pytest.mark.testbed]

CHILD_POST = "echo post-ran > /post-marker"
#: The testbed's binary and flags (conftest's `apptainer` fixture), set before each test.
TESTBED: dict[str, Any] = {"binary": APPTAINER, "build_flags": ("--fakeroot",), "exec_flags": ("--userns",)}


@pytest.fixture(autouse=True)
def _testbed_apptainer(apptainer: Any) -> None:
    """Bring the testbed's apptainer up (or skip/fail with its reason) and use its flags."""
    TESTBED.update(binary=apptainer.binary, build_flags=apptainer.build_flags, exec_flags=apptainer.exec_flags)


def write_workflow(root: Path, *, child_post: str = CHILD_POST, base_post: str = "", extra: str = "") -> Path:
    """A two-image workflow: base = scratch + busybox (+ a data file), child = localimage."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "busybox")
    if not (root / "hello.txt").exists():
        (root / "hello.txt").write_text("hello v1\n")
    base_post_lines = textwrap.indent(f"busybox --install -s /bin\n{base_post}".rstrip() + "\n", "      ")
    child_post_lines = textwrap.indent(child_post.rstrip() + "\n", "      ")
    text = (
        "hpcml: 1\nname: imgtest\nimages:\n"
        "  base:\n    from: scratch\n    shell: sh\n"
        "    files: {busybox: /bin/sh, hello.txt: /hello.txt}\n"
        f"    post: |\n{base_post_lines}"
        "  child:\n    from: base\n    shell: sh\n    env: {GREETING: hello-from-env}\n"
        f"    post: |\n{child_post_lines}"
        f"{extra}"
        "steps:\n  hello:\n    image: child\n    run: cat /post-marker\n"
    )
    path = root / "workflow.yaml"
    path.write_text(text)
    return path


def settings(tmp: Path, **over: Any) -> config.Settings:
    values = {"catalogs": str(tmp / "cat"), "cache_dir": str(tmp / "cache"),
              "build_flags": list(TESTBED["build_flags"]), "exec_flags": list(TESTBED["exec_flags"]),
              "apptainer": TESTBED["binary"]} | over
    return config.load(values, env={"HOME": str(tmp / "home"), "HPCML_SITE_CONFIG": str(tmp / "none.toml")})


def states(path: Path, s: config.Settings, names: list[str] | None = None) -> dict[str, str]:
    report = images.build_images(plan.build(spec.load(path)), s, names=names)
    return {n: r.state for n, r in report.results.items()}


def run_in(s: config.Settings, sif: str, script: str) -> str:
    app = Apptainer(LocalRunner(), s.apptainer)
    done = LocalRunner().run(app.exec_argv(sif, ["sh", "-c", script], s.exec_flags))
    assert done.ok, done.tail()
    return done.stdout


def test_build_scratch_and_localimage_child_then_run_it(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf")
    s = settings(tmp_path)
    events: list[images.ImageEvent] = []
    sifs = images.ensure(plan.build(spec.load(wf)), s, progress=events.append)
    assert [(e.name, e.state) for e in events] == [("base", "building"), ("base", "done"),
                                                   ("child", "building"), ("child", "done")]
    out = run_in(s, sifs["child"], "cat /post-marker; echo $GREETING; cat /hello.txt")
    assert out.split("\n")[:3] == ["post-ran", "hello-from-env", "hello v1"]
    entry = Catalog(tmp_path / "cat").get(plan.build(spec.load(wf)).images["child"].key)
    assert entry is not None and entry.manifest.apptainer_version and Path(entry.manifest.log or "").is_file()
    labels = Apptainer(LocalRunner(), s.apptainer).inspect_labels(sifs["child"])
    assert labels["org.hpcml.key"] == entry.key and labels["org.hpcml.image"] == "child"


def test_rebuilds_only_what_changed(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf")
    s = settings(tmp_path)
    assert states(wf, s) == {"base": "done", "child": "done"}
    assert states(wf, s) == {"base": "cached", "child": "cached"}  # unchanged: builds nothing
    write_workflow(tmp_path / "wf", child_post="echo post-ran-v2 > /post-marker")
    assert states(wf, s) == {"base": "cached", "child": "done"}  # only the changed image
    (tmp_path / "wf/hello.txt").write_text("hello v2\n")  # an input file of the base
    assert states(wf, s) == {"base": "done", "child": "done"}  # the image and its children
    assert states(wf, s, names=["base"]) == {"base": "cached"}


def test_failed_build_publishes_nothing_and_skips_children(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf", base_post="echo about-to-fail; exit 3")
    s = settings(tmp_path)
    with pytest.raises(BuildError) as err:
        images.ensure(plan.build(spec.load(wf)), s)
    message = str(err.value)
    assert "image base: build failed" in message and "log: " in message
    assert "image child: skipped (parent base failed)" in message
    log = Path(message.split("log: ")[1].split("\n")[0])
    assert "about-to-fail" in log.read_text()
    assert Catalog(tmp_path / "cat").keys() == []
    assert not list((tmp_path / "cat/sif").glob("*/*"))


def test_flipped_byte_is_refused(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf")
    s = settings(tmp_path)
    sif = Path(images.ensure(plan.build(spec.load(wf)), s, names=["base"])["base"])
    os.chmod(sif, 0o644)
    with open(sif, "r+b") as fh:
        fh.seek(sif.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(BuildError, match="corrupt"):
        images.ensure(plan.build(spec.load(wf)), s, names=["base"])
    assert not [r for r in images.catalog_path(s).verify_all() if r.ok]


def test_ca_bundle_is_bound_into_builds_but_not_kept(tmp_path: Path) -> None:
    ca = tmp_path / "lab-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nfake lab CA\n-----END CERTIFICATE-----\n")
    wf = write_workflow(
        tmp_path / "wf",
        base_post=f"head -n 1 {deffile.CA_BUNDLE} > /ca-seen-by-scratch-root",
        child_post=f'{CHILD_POST}\nhead -n 2 {deffile.CA_BUNDLE} > /ca-seen\necho "$SSL_CERT_FILE" >> /ca-seen',
    )
    s = settings(tmp_path, ca_bundle=str(ca))
    sifs = images.ensure(plan.build(spec.load(wf)), s)
    out = run_in(s, sifs["child"], f"cat /ca-seen; test -e {deffile.CA_BUNDLE} && echo LEAKED || echo not-kept")
    assert out.splitlines() == ["-----BEGIN CERTIFICATE-----", "fake lab CA", deffile.CA_BUNDLE, "not-kept"]


# ---- several processes ------------------------------------------------------------------

BUILDER = """
import json, sys
from hpcml import config, plan
from hpcml.images import ensure as images
from hpcml.spec import checker as spec
wf, cat, cache, app, flags = sys.argv[1:6]
s = config.load({"catalogs": cat, "cache_dir": cache, "build_flags": flags, "apptainer": app},
                env={"HOME": cache, "HPCML_SITE_CONFIG": "/nonexistent"})
report = images.build_images(plan.build(spec.load(wf)), s, names=["base"])
print(json.dumps({n: [r.state, r.sif] for n, r in report.results.items()}))
"""


def builder(tmp: Path, wf: Path, **kw: Any) -> subprocess.Popen[str]:
    script = tmp / "builder.py"
    script.write_text(BUILDER)
    argv = [sys.executable, str(script), str(wf), str(tmp / "cat"), str(tmp / "cache"), str(TESTBED["binary"]),
            " ".join(TESTBED["build_flags"])]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_four_processes_one_build(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf", base_post="sleep 2")
    procs = [builder(tmp_path, wf) for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out)["base"])
    assert sorted(state for state, _ in results) == ["cached", "cached", "cached", "done"]
    assert len({sif for _, sif in results}) == 1
    assert len(Catalog(tmp_path / "cat").keys()) == 1


def test_kill_9_mid_build_leaves_nothing_and_next_build_works(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf", base_post="sleep 5")
    key = plan.build(spec.load(wf)).images["base"].key
    proc = builder(tmp_path, wf, start_new_session=True)
    lock = tmp_path / "cat/locks" / f"{key}.lock"
    deadline = time.monotonic() + 60
    while not lock.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    time.sleep(1.0)  # inside apptainer build now
    os.killpg(proc.pid, signal.SIGKILL)  # the builder and its apptainer, like a killed job
    proc.wait()
    cat = Catalog(tmp_path / "cat")
    assert cat.get(key) is None and not list((tmp_path / "cat/sif").glob("*/*"))
    assert lock.exists()  # left behind by the dead builder
    # What the killed build printed so far stays in its build directory (gc'd after a day).
    (log,) = (tmp_path / "cat/tmp").glob("build-base-*/build.log")
    assert "# ---- apptainer build" in log.read_text()
    s = settings(tmp_path)
    assert states(wf, s, names=["base"]) == {"base": "done"}  # the stale lock was broken
    assert not lock.exists()


# ---- read-only lab catalog, signing --------------------------------------------------------


@pytest.fixture
def read_only_lab(tmp_path: Path) -> Any:
    """A catalog built at lab/ and seen read-only at lab-ro/ (a read-only bind mount: root
    ignores permission bits, so chmod would not make it read-only for these tests)."""
    lab, ro = tmp_path / "lab", tmp_path / "lab-ro"
    lab.mkdir()
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(lab), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True, capture_output=True)
        yield lab, ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_read_only_lab_catalog_is_read_but_push_fails(tmp_path: Path, read_only_lab: Any) -> None:
    lab, ro = read_only_lab
    wf = write_workflow(tmp_path / "wf")
    images.ensure(plan.build(spec.load(wf)), settings(tmp_path, catalogs=str(lab)), names=["base"])
    s = settings(tmp_path, catalogs=f"{tmp_path / 'user'}:{ro}")
    assert states(wf, s) == {"base": "cached", "child": "done"}  # base read from the lab
    path = images.catalog_path(s)
    assert path.lookup(plan.build(spec.load(wf)).images["base"].key).catalog.root == ro  # type: ignore[union-attr]
    child = path.find(plan.build(spec.load(wf)).images["child"].key[:12])
    assert child.catalog.root == tmp_path / "user"
    with pytest.raises(CatalogError, match=f"catalog {ro} is not writable.*Read-only file system"):
        path.copy(child, Catalog(ro))
    only_ro = settings(tmp_path / "other", catalogs=str(ro))
    write_workflow(tmp_path / "wf", child_post="echo changed > /post-marker")
    with pytest.raises(BuildError, match="no writable catalog"):
        images.ensure(plan.build(spec.load(wf)), only_ro)


def keypair(tmp: Path) -> tuple[Path, Path]:
    priv, pub = tmp / "lab.pem", tmp / "lab.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(priv)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(priv), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return priv, pub


def test_signing_round_trip_and_unsigned_refused(tmp_path: Path) -> None:
    priv, pub = keypair(tmp_path)
    wf = write_workflow(tmp_path / "wf")
    signer = settings(tmp_path, signing_key=str(priv), verify_key=str(pub), require_signatures=True)
    sifs = images.ensure(plan.build(spec.load(wf)), signer, names=["base"])
    key = plan.build(spec.load(wf)).images["base"].key
    assert Catalog(tmp_path / "cat").get(key).manifest.signed  # type: ignore[union-attr]
    shutil.rmtree(tmp_path / "cache")  # forget the verification: verify for real
    assert images.ensure(plan.build(spec.load(wf)), signer, names=["base"]) == sifs
    # An image built without a key, in a catalog that requires signatures: refused.
    unsigned = settings(tmp_path / "u", catalogs=str(tmp_path / "ucat"))
    images.ensure(plan.build(spec.load(wf)), unsigned, names=["base"])
    strict = settings(tmp_path / "u", catalogs=str(tmp_path / "ucat"), verify_key=str(pub), require_signatures=True)
    with pytest.raises(BuildError, match="signature check failed"):
        images.ensure(plan.build(spec.load(wf)), strict, names=["base"])
