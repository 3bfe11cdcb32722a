"""The hostile-workflow corpus (tests/corpus/hostile, docs/security.md#hostile-workflow-corpus):
injection into every section of a definition file, every #SBATCH directive a workflow can
influence, the job wrapper and the env file, and literal secrets of each kind. Each file is
refused by `validate` at the position its `# expect:` lines name, nothing it tries runs on
the host (its canary file never appears), and nothing is written to a catalog or a run
directory, also through `hpcml plan` and `hpcml run --executor local`.

Token-shaped values are written `@@NAME@@` in the corpus and filled in here from fakes
built by concatenation, so the repository holds no string a secret scanner would flag.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hpcml.errors import SpecError
from hpcml.spec import checker

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "hostile"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
FAKES = {
    "AWS": "AKIA" + "IOSFODNN7EXAMPLE",
    "GITHUB": "ghp_" + "x1" * 18,
    "GITLAB": "glpat-" + "y2" * 10,
    "SLACK": "xoxb-" + "1234567890-abcdef",
    "OPENAI": "sk-" + "z3" * 20,
    "HF": "hf_" + "w4" * 17,
    "PASSWORD": "pa" + "ss-w0rd",
    "PEM": "-----BEGIN OPENSSH " + "PRIVATE KEY-----",
}
EXPECT_RE = re.compile(r"# expect: (?P<where>\S+:\d+:\d+): (?P<snippet>.+)")


def expectations(name: str) -> list[tuple[str, str]]:
    text = (CORPUS / f"{name}.yaml").read_text()
    return [(m["where"], m["snippet"]) for m in EXPECT_RE.finditer(text)]


def fill(text: str, canary: Path) -> str:
    text = text.replace("@@CANARY@@", str(canary))
    for key, value in FAKES.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def workspace(tmp: Path, name: str, canary: Path) -> Path:
    """The case as `workflow.yaml` in a fresh directory, with its side files, placeholders filled."""
    wf_dir = tmp / "wf"
    wf_dir.mkdir()
    side = CORPUS / f"{name}.files"
    if side.is_dir():
        for src in sorted(side.rglob("*")):
            dst = wf_dir / src.relative_to(side)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(fill(src.read_text(), canary))
    wf = wf_dir / "workflow.yaml"
    wf.write_text(fill((CORPUS / f"{name}.yaml").read_text(), canary))
    return wf


def test_the_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    assert len(CASES) >= 30
    for name in CASES:
        assert expectations(name), f"{name}.yaml has no `# expect: FILE:LINE:COL: snippet` line"
    kinds = {name.split("-")[0] for name in CASES}
    assert kinds == {"def", "sbatch", "wrapper", "envfile", "secret"}


@pytest.mark.parametrize("name", CASES)
def test_hostile_workflow_is_refused_at_its_position(tmp_path: Path, name: str) -> None:
    canary = Path(f"/tmp/hpcml-pwned-{uuid.uuid4().hex}")
    wf = workspace(tmp_path, name, canary)
    with pytest.raises(SpecError) as err:
        checker.load(wf, allow_setup=(), max_tasks=100_000)
    shown = [str(d) for d in err.value.diagnostics]
    for where, snippet in expectations(name):
        want = f"{wf.parent / where.split(':')[0]}:{':'.join(where.split(':')[1:])}: "
        assert any(d.startswith(want) and snippet in d for d in shown), (where, snippet, shown)
    assert not canary.exists()


CLI_CASES = ["def-post-section", "def-deffile-setup", "sbatch-partition", "wrapper-quoted-placeholder",
             "envfile-secret-name", "secret-files-private-key", "secret-post-gitlab"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_plan_and_run_write_nothing_and_run_nothing(tmp_path: Path, name: str) -> None:
    canary = Path(f"/tmp/hpcml-pwned-{uuid.uuid4().hex}")
    wf = workspace(tmp_path, name, canary)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    env = {**os.environ, "HPCML_CATALOGS": str(catalog), "HPCML_CACHE_DIR": str(tmp_path / "cache"),
           "HPCML_CONFIG": str(tmp_path / "none.toml"), "HPCML_SITE_CONFIG": str(tmp_path / "none-site.toml")}
    before = sorted(p.name for p in wf.parent.iterdir())
    for argv in (["plan", str(wf)], ["run", str(wf), "--executor", "local"]):
        done = subprocess.run([sys.executable, "-m", "hpcml.cli", *argv], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode != 0, done.stdout + done.stderr
        where = expectations(name)[0][0].split(":")[1:]
        assert f":{where[0]}:{where[1]}: " in done.stderr, done.stderr
    assert sorted(p.name for p in wf.parent.iterdir()) == before  # no .hpcml run directory
    assert list(catalog.iterdir()) == []
    assert not canary.exists()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
