"""The corpus files that build offline (tests/corpus/deffiles, `# builds offline`), built by
the real Apptainer through hpcml's builder, in one workflow (one `ensure`, ~10 s), and
checked: every section did its part, build arguments gave two keys and two SIFs, the text
Apptainer substituted is the text hpcml validated and hashed, and `%setup` ran only
because the lab allowed it, as the manifest records."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hpcml import __version__, config, plan
from hpcml.clients.apptainer import Apptainer
from hpcml.clients.runner import LocalRunner
from hpcml.errors import BuildError
from hpcml.images import ensure as images
from hpcml.images.catalog import Catalog
from hpcml.images.staging import staged_names
from hpcml.render import buildargs, deffile
from hpcml.spec import checker as spec

pytestmark = [pytest.mark.testbed]

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "deffiles"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

IMAGES = """\
  sections: {deffile: scratch-all-sections.def, shell: sh}
  apps: {deffile: scif-apps.def, shell: sh}
  hello: {deffile: build-args.def, shell: sh}
  bonjour: {deffile: build-args.def, shell: sh, build_args: {GREETING: bonjour}}
  child: {deffile: localimage-args.def, shell: sh}
  stages: {deffile: multistage.def, shell: sh}
  setup: {deffile: host-setup.def, shell: sh}
"""


@pytest.fixture(scope="module")
def built(apptainer: Any, busybox_sif: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("defcorpus")
    wf_dir = root / "wf"
    wf_dir.mkdir()
    for path in CORPUS.glob("*.def"):
        shutil.copy(path, wf_dir / path.name)
    shutil.copy(BUSYBOX, wf_dir / "busybox")
    (wf_dir / "data").mkdir()
    (wf_dir / "data/hello.txt").write_text("hello from the host\n")
    shutil.copy(busybox_sif, wf_dir / "base.sif")
    wf = wf_dir / "workflow.yaml"
    wf.write_text(f"hpcml: 1\nname: corpus\nimages:\n{IMAGES}steps:\n  s: {{image: sections, run: 'true'}}\n")
    s = config.load({"catalogs": str(root / "cat"), "cache_dir": str(root / "cache"), "apptainer": apptainer.binary,
                     "build_flags": list(apptainer.build_flags), "exec_flags": list(apptainer.exec_flags),
                     "allow_setup": ["setup"]},
                    env={"HOME": str(root / "home"), "HPCML_SITE_CONFIG": str(root / "none.toml")})
    p = plan.build(spec.load(wf, allow_setup=s.allow_setup))
    sifs = images.ensure(p, s)
    return {"plan": p, "sifs": sifs, "settings": s, "root": root}


def run(built: dict[str, Any], image: str, *argv: str, app: str | None = None) -> str:
    s = built["settings"]
    runner = LocalRunner()
    if app is not None:
        done = runner.run([s.apptainer, "run", *s.exec_flags, "--app", app, built["sifs"][image], *argv])
    else:
        done = runner.run(Apptainer(runner, s.apptainer).exec_argv(built["sifs"][image], list(argv), s.exec_flags))
    assert done.ok, done.tail()
    return done.stdout


def test_every_image_section(built: dict[str, Any]) -> None:
    out = run(built, "sections", "sh", "-c", 'cat /opt/built /opt/data/hello.txt; echo "$GREETING"')
    assert out.splitlines() == ["built", "hello from the host", "hello from the image"]
    labels = Apptainer(LocalRunner(), built["settings"].apptainer).inspect_labels(built["sifs"]["sections"])
    assert labels["org.example.purpose"] == "corpus" and labels["org.hpcml.image"] == "sections"


def test_scif_app_runs(built: dict[str, Any]) -> None:
    assert run(built, "apps", app="greet").strip() == "hello world"
    assert run(built, "apps", "cat", "/scif/apps/greet/greet.txt").strip() == "installed greet"


def test_build_args_two_values_two_keys_two_sifs(built: dict[str, Any]) -> None:
    p = built["plan"]
    assert p.images["hello"].key != p.images["bonjour"].key
    assert built["sifs"]["hello"] != built["sifs"]["bonjour"]
    assert run(built, "hello", "cat", "/greeting", "/banner").split() == ["hello", "hello-banner"]
    assert run(built, "bonjour", "cat", "/greeting", "/banner").split() == ["bonjour", "bonjour-banner"]
    manifest = Catalog(built["root"] / "cat").get(p.images["bonjour"].key).manifest
    assert manifest.build_args == (("GREETING", "bonjour"),) and not manifest.host_setup


def test_apptainer_substituted_what_hpcml_validated(built: dict[str, Any]) -> None:
    """The definition inside the SIF (after Apptainer's substitution) is hpcml's substitution
    of the text it gave `apptainer build`, byte for byte: the comment rule included."""
    s, p = built["settings"], built["plan"]
    for name in ("hello", "bonjour", "child"):
        image = p.images[name]
        done = LocalRunner().run([s.apptainer, "inspect", "--deffile", built["sifs"][name]])
        assert done.ok, done.tail()
        local = deffile.localize(image.definition, staged_names(image.inputs),
                                 build_args=dict(image.image.build_args), allow_host=image.image.host_setup)
        given = deffile.bind(local, name=name, key=image.key, version=__version__)
        ours = buildargs.substitute(given, name, dict(image.image.build_args)).text
        # Apptainer keeps the stage from its Bootstrap: line (comments above it are dropped).
        assert done.stdout.strip() == ours[buildargs.stage_offsets(ours)[-1]:].strip()
    assert "echo literal # keeps {{ GREETING }} as written" in done.stdout or name == "child"


def test_localimage_from_a_build_argument(built: dict[str, Any]) -> None:
    assert run(built, "child", "cat", "/child").strip() == "child of base.sif"
    assert [rel for rel, _ in built["plan"].images["child"].inputs] == ["base.sif"]


def test_multistage_copies_from_the_build_stage(built: dict[str, Any]) -> None:
    out = run(built, "stages", "cat", "/opt/artifact", "/opt/hello.txt")
    assert out.splitlines() == ["made in the build stage", "hello from the host"]
    labels = Apptainer(LocalRunner(), built["settings"].apptainer).inspect_labels(built["sifs"]["stages"])
    assert labels["org.hpcml.key"] == built["plan"].images["stages"].key  # stamped into the final stage


def test_allowed_setup_ran_and_is_recorded(built: dict[str, Any]) -> None:
    p = built["plan"]
    assert run(built, "setup", "cat", "/opt/from-setup").strip() == "written by setup"
    entry = Catalog(built["root"] / "cat").get(p.images["setup"].key)
    assert entry is not None and entry.manifest.host_setup
    assert json.loads(entry.manifest.to_json())["host_setup"] is True
    assert plan.to_document(p)["images"][-1]["host_setup"] is True  # type: ignore[index]


def test_the_builder_refuses_host_setup_its_settings_do_not_allow(built: dict[str, Any], tmp_path: Path) -> None:
    """A plan made under other settings (here: allowing `setup`) runs no host code under
    settings that do not allow it: refused before `apptainer build`, nothing published."""
    s = dataclasses.replace(built["settings"], allow_setup=(), catalogs=(str(tmp_path / "cat"),))
    with pytest.raises(BuildError, match="allow_setup does not name it"):
        images.ensure(built["plan"], s, names=["setup"])
    assert Catalog(tmp_path / "cat").keys() == []
