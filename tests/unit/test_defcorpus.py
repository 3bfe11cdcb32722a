"""Bringing existing files: the corpus of hand-written definition files (tests/corpus/
deffiles) through `validate` and `plan`, build arguments, and the `%setup` opt-in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hpcml import config, plan
from hpcml.errors import ConfigError, SpecError
from hpcml.images.manifest import Manifest
from hpcml.render import buildargs, deffile
from hpcml.spec import checker

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "deffiles"
DEFFILES = sorted(p.name for p in CORPUS.glob("*.def"))


def workspace(tmp: Path, name: str, extra: str = "") -> Path:
    """A workflow directory holding corpus file `name` as image `x`, and the host files
    the corpus names (dummy contents: nothing is built here)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORPUS / name, tmp / name)
    (tmp / "busybox").write_text("not really busybox\n")
    (tmp / "data").mkdir(exist_ok=True)
    (tmp / "data/hello.txt").write_text("hello\n")
    (tmp / "base.sif").write_text("sif\n")
    (tmp / "archives").mkdir(exist_ok=True)
    (tmp / "archives/base.tar").write_text("tar\n")
    (tmp / "archives/base-docker.tar").write_text("tar\n")
    (tmp / "layouts/base").mkdir(parents=True, exist_ok=True)
    (tmp / "layouts/base/index.json").write_text("{}\n")
    wf = tmp / "workflow.yaml"
    wf.write_text(f"hpcml: 1\nname: corpus\nimages:\n  x: {{deffile: {name}{extra}}}\n"
                  "steps:\n  s: {image: x, run: 'true'}\n")
    return wf


def test_the_corpus_covers_every_section_and_agent() -> None:
    sections, agents = set(), set()
    for name in DEFFILES:
        parsed = deffile.parse_definition(buildargs.substitute((CORPUS / name).read_text(), name, {}).text, name,
                                          allow_host=True)
        agents |= {st.bootstrap for st in parsed.stages}
        sections |= {s[0] for st in parsed.stages for s in st.sections}
    assert agents == set(deffile.BOOTSTRAP_AGENTS)
    assert sections == set(deffile.SECTIONS)


@pytest.mark.parametrize("name", [n for n in DEFFILES if n != "host-setup.def"])
def test_corpus_file_is_accepted_and_planned(tmp_path: Path, name: str) -> None:
    wf = workspace(tmp_path, name)
    p = plan.build(checker.load(wf, allow_setup=()))
    image = p.images["x"]
    assert image.definition == (CORPUS / name).read_text()  # used as written
    assert not image.image.host_setup


def test_appfiles_sources_are_inputs(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "scif-apps.def")
    before = plan.build(checker.load(wf, allow_setup=()))
    assert "data/hello.txt" in dict(before.images["x"].inputs)
    (tmp_path / "data/hello.txt").write_text("changed\n")
    assert plan.build(checker.load(wf, allow_setup=())).images["x"].key != before.images["x"].key


def test_inputs_are_resolved_before_hashing(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "localimage-args.def")
    (tmp_path / "other.sif").write_text("another base\n")
    default = plan.build(checker.load(wf, allow_setup=()))
    assert [rel for rel, _ in default.images["x"].inputs] == ["base.sif"]
    workspace(tmp_path, "localimage-args.def", extra=", build_args: {BASE: other.sif}")
    other = plan.build(checker.load(wf, allow_setup=()))
    assert [rel for rel, _ in other.images["x"].inputs] == ["other.sif"]
    assert other.images["x"].key != default.images["x"].key


def test_two_values_two_keys_and_the_plan_shows_them(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "build-args.def", extra=", build_args: {GREETING: bonjour}")
    text = wf.read_text().replace("steps:", "  y: {deffile: build-args.def, build_args: {GREETING: hola}}\n"
                                           "  z: {deffile: build-args.def}\nsteps:")
    wf.write_text(text)
    p = plan.build(checker.load(wf, allow_setup=()))
    keys = {n: p.images[n].key for n in ("x", "y", "z")}
    assert len(set(keys.values())) == 3
    doc = plan.to_document(p)["images"]
    assert [i.get("build_args") for i in doc] == [{"GREETING": "bonjour"}, {"GREETING": "hola"}, None]
    assert "build args GREETING=bonjour" in plan.describe_extras(p.images["x"].image)


def test_substitution_follows_apptainer() -> None:
    text = (CORPUS / "build-args.def").read_text()
    out = buildargs.substitute(text, "b.def", {"GREETING": "bonjour"})
    assert 'echo "bonjour" > /greeting' in out.text
    assert 'echo "bonjour-banner" > /banner' in out.text  # nested default, filled once
    assert "echo literal # keeps {{ GREETING }} as written" in out.text  # Apptainer's comment rule
    assert "    BANNER=bonjour-banner" in out.text  # %arguments is substituted too
    assert "busybox /bin/busybox" in out.text
    assert out.consumed == {"GREETING", "TOOL", "BANNER"}
    # Each stage has its own defaults: the second stage does not see the first's.
    two = "Bootstrap: scratch\n%arguments\n  A=1\n%post\n  echo {{ A }}\nBootstrap: scratch\n%post\n  echo {{ A }}\n"
    with pytest.raises(SpecError, match=r"^t.def:8:8: build argument A has no value"):
        buildargs.substitute(two, "t.def", {})
    assert buildargs.substitute(two, "t.def", {"A": "2"}).text.count("echo 2") == 2
    # '#!' is not a comment for Apptainer; '#x' is, wherever it is on the line.
    assert buildargs.substitute("a #!{{ A }}\nb #x {{ A }}\n", "t", {"A": "v"}).text == "a #!v\nb #x {{ A }}\n"


def test_missing_argument_names_its_position(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "build-args.def")
    (tmp_path / "build-args.def").write_text((CORPUS / "build-args.def").read_text()
                                             + "\n%runscript\n    exec {{ PROGRAM }}\n")
    with pytest.raises(SpecError) as err:
        checker.load(wf, allow_setup=())
    assert f"{tmp_path}/build-args.def:25:10: build argument PROGRAM has no value" in str(err.value)


@pytest.mark.parametrize("args, where, message", [
    ("{NOPE: x}", "4:45", "build argument 'NOPE' is not used by build-args.def"),
    ("{GREETING: '$(id)'}", "4:55", "would reach the definition file unquoted"),
    ("{TOOL: '~root/.profile'}", "4:51", "would reach the definition file unquoted"),
    ("{GREETING: '-x'}", "4:55", "not start with '-'"),
    ("{GREETING: 'a -rf /'}", "4:55", "one word: no spaces"),
    ("{bad-name: x}", "4:45", "build argument name 'bad-name' is invalid"),
    ("[a]", "4:44", "must be a mapping"),
])
def test_bad_build_args(tmp_path: Path, args: str, where: str, message: str) -> None:
    wf = workspace(tmp_path, "build-args.def", extra=f", build_args: {args}")
    with pytest.raises(SpecError) as err:
        checker.load(wf, allow_setup=())
    assert f"workflow.yaml:{where}: " in str(err.value) and message in str(err.value)


def test_build_args_only_on_a_deffile(tmp_path: Path) -> None:
    wf = tmp_path / "workflow.yaml"
    wf.write_text("hpcml: 1\nname: t\nimages:\n  x: {from: scratch, build_args: {A: b}}\n"
                  "steps:\n  s: {image: x, run: 'true'}\n")
    with pytest.raises(SpecError, match="apply only to a deffile: image"):
        checker.load(wf)


def test_a_default_cannot_smuggle_a_shell_into_files(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "build-args.def")
    text = (CORPUS / "build-args.def").read_text().replace("TOOL=busybox", "TOOL=x$(sh<.p)")
    (tmp_path / "build-args.def").write_text(text)
    (tmp_path / "x$(sh<.p)").write_text("dummy\n")
    with pytest.raises(SpecError, match=r"build-args.def:12:1: %files source 'x\$\(sh<.p\)': Apptainer expands"):
        checker.load(wf, allow_setup=())


def test_setup_is_refused_by_default_and_names_the_setting(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "host-setup.def")
    with pytest.raises(SpecError) as err:
        checker.load(wf, allow_setup=("another-image",))
    text = str(err.value)
    assert "host-setup.def:4:1: section %pre runs on the build host" in text
    assert "host-setup.def:7:1: section %setup runs on the build host" in text and "allow_setup" in text


def test_setup_allowed_for_the_named_image_is_visible(tmp_path: Path) -> None:
    wf = workspace(tmp_path, "host-setup.def")
    p = plan.build(checker.load(wf, allow_setup=("x",)))
    assert p.images["x"].image.host_setup
    assert plan.to_document(p)["images"][0]["host_setup"] is True  # type: ignore[index]
    assert "RUN ON THE BUILD HOST" in plan.describe_extras(p.images["x"].image)
    # An allowed image without such sections is not marked.
    wf2 = workspace(tmp_path / "other", "scratch-all-sections.def")
    assert not plan.build(checker.load(wf2, allow_setup=("x",))).images["x"].image.host_setup


def test_manifest_records_build_args_and_host_setup_only_when_set() -> None:
    base = {"key": "a" * 64, "name": "x", "definition": "d", "inputs": (), "parent_key": None, "sha256": "0" * 64,
            "size": 1, "apptainer_version": "1.4.5", "user": "u", "host": "h", "created": "now"}
    plain = Manifest(**base)  # type: ignore[arg-type]
    assert "host_setup" not in plain.to_json() and "build_args" not in plain.to_json()
    marked = Manifest(**base, build_args=(("A", "1"),), host_setup=True)  # type: ignore[arg-type]
    again = Manifest.from_json(marked.to_json())
    assert again.host_setup and again.build_args == (("A", "1"),)


@pytest.mark.parametrize("text, where, message", [
    ("Bootstrap: buildkit\nFrom: .\n", "1:1", "Bootstrap: buildkit arrived in Apptainer 1.5"),
    ("Bootstrap: self\n", "1:1", "not a bootstrap agent of Apptainer 1.4"),
    ("Bootstrap: localimage\nFrom: a#b.sif\n", "2:8", "'#' inside a header value"),
    ("Bootstrap: docker\nFrom: a\nFrom: b\n", "3:1", "given twice"),
    ("Bootstrap: scratch\n%apprun\n  true\n", "2:1", "needs the app's name"),
    ("Bootstrap: scratch\n%files from nowhere\n  /a /a\n", "2:1", "no earlier stage has 'Stage: nowhere'"),
    ("%post\n  true\nBootstrap: scratch\n", "1:1", "text before the first 'Bootstrap:' line"),
    ("Bootstrap: busybox\n", "1:1", "needs a 'MirrorURL:' header"),
    ("Bootstrap: Scratch\n", "1:1", "Apptainer reads agent names as written"),
    ("Bootstrap: scratch\n%post\ttab\n", "2:1", "unknown section %post\ttab"),
])
def test_refused_with_reason(text: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        deffile.parse_definition(text, "x.def")
    assert f"x.def:{where}: " in str(err.value) and message in str(err.value)


def test_header_comment_after_a_space_is_read_as_apptainer_does() -> None:
    parsed = deffile.parse_definition("Bootstrap: docker\nFrom: busybox:latest   # a comment\n", "x.def")
    assert parsed.header["from"][0] == "busybox:latest"


def test_header_continuation_and_numbered_keys() -> None:
    parsed = deffile.parse_definition(
        "Bootstrap: yum\nOSVersion: 9\nMirrorURL: http://m/\nInclude: a \\\n  b\nOtherURL1: http://o/\n", "x.def")
    assert parsed.header["include"][0] == "a b" and parsed.header["otherurl1"][0] == "http://o/"


# ---- the lab file locks keys ----------------------------------------------------------


def lab_env(tmp: Path, lab: str, user: str = "") -> dict[str, str]:
    (tmp / "lab.toml").write_text(lab)
    (tmp / "user.toml").write_text(user)
    return {"HOME": str(tmp), "HPCML_SITE_CONFIG": str(tmp / "lab.toml"), "HPCML_CONFIG": str(tmp / "user.toml")}


def test_allow_setup_defaults_to_nobody(tmp_path: Path) -> None:
    assert config.load(env=lab_env(tmp_path, "")).allow_setup == ()


def test_a_locked_key_cannot_be_widened(tmp_path: Path) -> None:
    lab = 'allow_setup = ["cuda-base"]\nlocked = ["allow_setup"]\n'
    s = config.load(env=lab_env(tmp_path, lab))
    assert s.allow_setup == ("cuda-base",) and s.locked == ("allow_setup",)
    with pytest.raises(ConfigError, match=r"user.toml: allow_setup is locked by the lab configuration"):
        config.load(env=lab_env(tmp_path, lab, 'allow_setup = ["mine"]\n'))
    with pytest.raises(ConfigError, match=r"HPCML_ALLOW_SETUP: allow_setup is locked"):
        config.load(env=lab_env(tmp_path, lab) | {"HPCML_ALLOW_SETUP": "mine"})
    with pytest.raises(ConfigError, match=r"--allow-setup: allow_setup is locked"):
        config.load({"allow_setup": ["mine"]}, env=lab_env(tmp_path, lab))
    # Only the lab file may lock, and only known keys.
    with pytest.raises(ConfigError, match="unknown setting 'locked'"):
        config.load(env=lab_env(tmp_path, "", 'locked = ["allow_setup"]\n'))
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        config.load(env=lab_env(tmp_path, 'locked = ["nope"]\n'))


def test_identity_labels_go_into_the_last_stage() -> None:
    """Earlier stages are thrown away: labels stamped into their %labels would be lost."""
    text = "Bootstrap: scratch\nStage: a\n%labels\n  x 1\nBootstrap: scratch\n%post\n  true\n"
    bound = deffile.bind(text, key="ab", name="n")
    last = deffile.parse_definition(bound, "x.def").stages[-1]
    assert [s[0] for s in last.sections] == ["post", "labels"]
    assert "org.hpcml.key ab" in last.sections[-1][3]


def test_cli_reads_the_lab_file_for_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hpcml validate` and `plan` ask the configuration (lab file, locked) when a deffile
    has %setup: refused naming the setting, then allowed and shown once the lab allows it."""
    from click.testing import CliRunner

    from hpcml.cli.app import main

    wf = workspace(tmp_path / "wf", "host-setup.def")
    for key, value in lab_env(tmp_path, "").items():
        monkeypatch.setenv(key, value)
    refused = CliRunner().invoke(main, ["validate", str(wf)])
    assert refused.exit_code != 0 and "allow_setup" in refused.output
    (tmp_path / "lab.toml").write_text('allow_setup = ["x"]\nlocked = ["allow_setup"]\n')
    monkeypatch.setenv("COLUMNS", "250")  # one table row per image
    shown = CliRunner().invoke(main, ["plan", str(wf)])
    assert shown.exit_code == 0, shown.output
    assert "%setup/%pre RUN ON THE BUILD HOST" in shown.output
    monkeypatch.setenv("HPCML_ALLOW_SETUP", "y")
    locked = CliRunner().invoke(main, ["validate", str(wf)])
    assert locked.exit_code != 0 and "allow_setup is locked" in locked.output
