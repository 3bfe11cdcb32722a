"""A lab catalog on a read-only mount (issue 15), for real: a catalog holding one image is
bind-mounted read-only (root remounts the bind `ro`, so every write there fails with EROFS)
and put first in the search path, before the user's writable catalog.

What is shown: `hpcml run` uses the lab's image as it is (nothing built for it, nothing
written there: no lock, temporary file or use stamp attempted, no traceback) and builds the
image the lab lacks into the writable catalog; `catalog list/show/verify` read it;
`catalog push --to` and `catalog tag --in` it fail with one clear error naming the catalog
and "Read-only file system"; with the writable catalog first the run is the same.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_run_local import hpcml, hpcml_env  # noqa: F401 - fixture
import testbed

pytestmark = pytest.mark.testbed

STEPS = """\
  a:
    run: echo a > {out}/a
  b:
    image: extra
    run: cat /extra > {out}/b
"""


def write(directory: Path, busybox: Path) -> Path:
    """Two images: `bb` (published in the lab catalog) and `extra` (in no catalog yet)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "workflow.yaml"
    path.write_text(
        f"hpcml: 1\nname: rocat\nimages:\n  bb:\n    from: localimage:{busybox}\n    shell: sh\n"
        f"  extra:\n    from: localimage:{busybox}\n    shell: sh\n    post: echo extra > /extra\n"
        "defaults:\n  image: bb\nsteps:\n" + STEPS
    )
    return path


@pytest.fixture
def read_only_lab(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> Iterator[tuple[Path, Path]]:  # noqa: F811
    """(the lab catalog's read-only mount point, the workflow): image `bb` built into the
    lab catalog, which is then bind-mounted read-only."""
    wf = write(tmp_path / "wf", busybox_sif)
    source, mounted = tmp_path / "lab-rw", tmp_path / "lab"
    mounted.mkdir()
    hpcml("build", str(wf), "bb", env={**hpcml_env, "HPCML_CATALOGS": str(source)})
    done = subprocess.run(["mount", "--bind", str(source), str(mounted)], capture_output=True, text=True)
    if done.returncode != 0:
        testbed.testbed_unavailable(f"cannot bind-mount for the read-only catalog test: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True, capture_output=True)
        yield mounted, wf
    finally:
        subprocess.run(["umount", "-l", str(mounted)], capture_output=True)


def test_a_read_only_lab_catalog_is_used_and_builds_go_to_the_writable_one(
    tmp_path: Path, read_only_lab: tuple[Path, Path], hpcml_env: dict[str, str]  # noqa: F811
) -> None:
    lab, wf = read_only_lab
    user = tmp_path / "user"
    env = {**hpcml_env, "HPCML_CATALOGS": f"{lab}:{user}", "HPCML_EXECUTOR": "local"}
    before = sorted(p.relative_to(lab) for p in lab.rglob("*"))
    with pytest.raises(OSError):
        (lab / "probe").touch()  # really read-only

    r = hpcml("run", str(wf), "--watch", env=env, timeout=300)
    assert "2 completed" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Read-only" not in r.stderr, r.stderr
    assert "image bb: building" not in r.stderr and "image extra: building" in r.stderr, r.stderr
    assert sorted(p.relative_to(lab) for p in lab.rglob("*")) == before
    rows = {row["name"]: row for row in json.loads(hpcml("catalog", "list", "--json", env=env).stdout)}
    assert Path(rows["bb"]["catalog"]) == lab and Path(rows["extra"]["catalog"]) == user, rows
    outs = wf.parent / ".hpcml" / "tasks"
    assert [p.read_text() for p in outs.glob("b/*/out/b")] == ["extra\n"]

    r = hpcml("catalog", "show", "bb", env=env)
    assert f"catalog:           {lab}" in r.stdout, r.stdout
    r = hpcml("catalog", "verify", "--json", env=env)
    assert sorted((Path(v["catalog"]), v["ok"]) for v in json.loads(r.stdout)) == [(lab, True), (user, True)], r.stdout

    for args in (("catalog", "push", "extra", "--to", str(lab)), ("catalog", "tag", "bb", "bb:v1", "--in", str(lab))):
        r = hpcml(*args, env=env, check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert f"hpcml: error: catalog {lab} is not writable ({lab}: Read-only file system)" in r.stderr, r.stderr
    assert sorted(p.relative_to(lab) for p in lab.rglob("*")) == before

    # the writable catalog first: the lab still serves `bb`, nothing is rebuilt
    env["HPCML_CATALOGS"] = f"{user}:{lab}"
    r = hpcml("run", str(wf), "--watch", "--force", "a,b", env=env, timeout=300)
    assert "2 completed" in r.stdout and "building" not in r.stderr, r.stdout + r.stderr
    assert len(list(user.glob("sif/*/*.sif"))) == 1  # only `extra`
