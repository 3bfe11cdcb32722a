"""Finding 5 and 7 of docs/security.md: '#' and other line-breaking characters in paths and
values that reach #SBATCH lines or definition headers; lab-locked settings; build settings
in image keys; validate refusing what submission refuses; placeholders inside quotes;
names checked with fullmatch (a trailing newline is not a valid name)."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from hpcml import config, plan
from hpcml.errors import CatalogError, ConfigError, SpecError, SubmitError
from hpcml.images import manifest
from hpcml.render import jobs, notify
from hpcml.remote.settings import parse_remotes
from hpcml.spec import checker
from hpcml.spec.rules import CONSTRAINT_RE, SLURM_NAME_RE

REPO = Path(__file__).resolve().parents[2]
HEAD = "hpcml: 1\nname: t\nimages:\n  bb: {from: scratch, shell: sh}\ndefaults: {image: bb}\nsteps:\n"


def errors(text: str, root: Path) -> list[str]:
    with pytest.raises(SpecError) as err:
        checker.loads(text, "workflow.yaml", root=str(root))
    return [str(d) for d in err.value.diagnostics]


# ---- '#' in paths and values --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/home/u/a#b", "/home/u/a\x0bb", "/home/u/a\x00b", "/x/a b", "/x/a\nb"])
def test_check_path_refuses_what_sbatch_or_a_bind_would_cut(path: str) -> None:
    with pytest.raises(SubmitError, match="hpcml needs an absolute path without blanks, quotes, '#'"):
        jobs.check_path(path, "workflow directory")


@pytest.mark.parametrize("directive", ["--output=/r/a#b/%j.out", "--comment=x y", "--x=a\nb", "--x=\"q\"", "partition=x"])
def test_every_sbatch_line_is_one_word_without_a_comment(directive: str) -> None:
    with pytest.raises(SubmitError, match="cannot write the #SBATCH directive"):
        jobs.sbatch_lines([directive])
    assert jobs.sbatch_lines(["--output=/r/s.%A_%a.out", "--array=0-3%2"])[1] == "#SBATCH --array=0-3%2"


def test_notify_script_checks_its_partition_and_run_directory() -> None:
    spec = notify.NotifySpec("wf", "r1", "finish", "/w/.hpcml", "/usr/bin/python3", None, partition="cpu#x")
    with pytest.raises(SubmitError, match="invalid partition"):
        notify.render_notify_script(spec)
    spec = notify.NotifySpec("wf", "r1", "finish", "/w#x/.hpcml", "/usr/bin/python3", None)
    with pytest.raises(SubmitError, match="'#'"):
        notify.render_notify_script(spec)


@pytest.mark.parametrize(("image", "where", "fragment"), [
    ("{from: 'localimage:/shared/a#b.sif'}", "7:13", "localimage path '/shared/a#b.sif' must end with .sif and have no blanks, '#'"),
    ("{from: 'debootstrap:bookworm', mirror: 'http://deb.debian.org/debian#x'}", "7:45", "invalid mirror URL"),
    ("{from: scratch, files: {src: '/opt/a#b'}}", "7:35", "files destination '/opt/a#b' must be an absolute path with no blanks, '#'"),
    ("{from: scratch, files: {'a#b': /opt/x}}", "7:30", "files source 'a#b': Apptainer expands %files sources with a shell"),
])
def test_a_hash_in_a_definition_word_is_refused_where_it_is_written(tmp_path: Path, image: str, where: str,
                                                                    fragment: str) -> None:
    (tmp_path / "src").write_text("x")
    (tmp_path / "a#b").write_text("x")
    text = f"hpcml: 1\nname: t\ndefaults: {{image: i}}\nsteps:\n  s: {{run: 'true'}}\nimages:\n  i: {image}\n"
    found = errors(text, tmp_path)
    assert any(line.startswith(f"workflow.yaml:{where}: ") and fragment in line for line in found), found


# ---- validate refuses what submission refuses ------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("partition", "gpu:a100"), ("account", "lab+x"), ("qos", "a#b"),
                                            ("constraint", "ib:x"), ("constraint", "a!b"), ("partition", "gpü")])
def test_validate_refuses_partition_and_constraint_values_sbatch_would_get_wrong(tmp_path: Path, key: str,
                                                                                 value: str) -> None:
    text = HEAD + f"  s:\n    run: 'true'\n    resources: {{{key}: '{value}'}}\n"
    found = errors(text, tmp_path)
    assert any(line.startswith("workflow.yaml:9:") and f"invalid {key}" in line for line in found), found


def test_spec_and_job_script_share_one_rule_for_slurm_names() -> None:
    for pattern, flag in ((SLURM_NAME_RE, "partition"), (CONSTRAINT_RE, "constraint")):
        for c in string.printable + "é":
            value = f"a{c}b"
            by_spec = pattern.fullmatch(value) is not None
            try:
                jobs._directive_value(flag, value, pattern)
                by_jobs = True
            except SubmitError:
                by_jobs = False
            assert by_spec == by_jobs, (flag, value)


# ---- placeholders inside quotes -------------------------------------------------------------


@pytest.mark.parametrize(("run", "matrix", "fragment"), [
    ('echo "{x}"', "{x: ['a\"; touch /tmp/hpcml-pwned; \"']}", "{x} in run of step 's' stands inside double quotes"),
    ("echo '{x}'", "{x: ['a b']}", "stands inside single quotes"),
    ("echo `{x}`", "{x: ['$(id)']}", "stands inside backquotes"),
    ("cat <<EOF\n      {x}\n      EOF", "{x: ['$(id)']}", "stands inside a here-document"),
])
def test_a_placeholder_inside_quotes_is_refused_when_its_value_needs_quoting(tmp_path: Path, run: str,
                                                                             matrix: str | None, fragment: str) -> None:
    m = f"    matrix: {matrix}\n" if matrix else ""
    text = HEAD + f"  s:\n{m}    run: |\n      {run}\n"
    found = errors(text, tmp_path)
    assert any(fragment in line and "write it outside quotes" in line for line in found), found


def test_quoted_placeholders_with_plain_values_are_allowed(tmp_path: Path) -> None:
    text = HEAD + ("  s:\n    matrix: {lr: [0.1, 1e-3], m: [resnet-50]}\n"
                   "    run: trap 'echo {lr} > {out}/c' USR2; echo \"lr={lr} m={m} step={step} task={task} $(cat {out}/c)\"\n")
    checker.loads(text, "workflow.yaml", root=str(tmp_path))


@pytest.mark.parametrize("path", ["/home/u/a$b", "/home/u/a`id`", "/home/u/a;b", "/home/u/a&b", "/home/u/(x)", "/h/~u"])
def test_a_workflow_directory_whose_task_paths_would_need_quoting_is_refused(path: str) -> None:
    with pytest.raises(SubmitError, match="free of characters a shell treats specially"):
        jobs.check_run_path(path)
    jobs.check_run_path("/home/josé/proj-1.2/run=3@x")


def test_task_paths_fill_placeholders_as_plain_words_so_quotes_around_them_hold() -> None:
    command = "trap 'echo x > {out}/c' USR2; cat \"{in.prep}/d\""
    assert plan.fill_paths(command, "/home/josé/w/o", {"prep": "/w/p"}) == \
        "trap 'echo x > /home/josé/w/o/c' USR2; cat \"/w/p/d\""


# ---- trailing newlines ------------------------------------------------------------------------


def test_names_and_keys_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(CatalogError):
        manifest.check_key("0123456789abcdef\n")
    with pytest.raises(CatalogError):
        manifest.check_name("tag", "latest\n")
    with pytest.raises(CatalogError):
        manifest.check_name("image name", "torch\n")
    with pytest.raises(ValueError, match="remote name"):
        parse_remotes({"lab\n": {"host": "x"}}, Path("/h"), None)
    assert manifest.check_key("0123456789abcdef") == "0123456789abcdef"


def test_no_name_check_in_hpcml_uses_match_with_a_dollar() -> None:
    # `PATTERN.match(value)` with a pattern ending in `$` accepts "name\n"; every check
    # uses fullmatch (JSON Schema patterns follow ECMAScript, where `$` is the end of input).
    offenders = []
    for path in (REPO / "hpcml").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"""^\s*(\w+)\s*=\s*re\.compile\(r?["'].*\$["']""", text, re.MULTILINE):
            if re.search(rf"\b{m.group(1)}\.match\(", text):
                offenders.append(f"{path.relative_to(REPO)}: {m.group(1)}.match")
    assert offenders == []


# ---- lab-locked settings ----------------------------------------------------------------------


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site.toml"
    site.write_text('require_signatures = true\nverify_key = "/lab/key.pub.pem"\nlocked = ["require_signatures", "verify_key"]\n')
    return {"HOME": str(tmp_path / "home"), "HPCML_SITE_CONFIG": str(site), "HPCML_CONFIG": str(tmp_path / "user.toml")}


def test_a_locked_key_cannot_be_weakened_by_the_user_file(lab: dict[str, str]) -> None:
    Path(lab["HPCML_CONFIG"]).write_text("require_signatures = false\n")
    with pytest.raises(ConfigError, match=r"user.toml: require_signatures is locked by the lab configuration .*site.toml"):
        config.load(env=lab)


def test_a_locked_key_cannot_be_weakened_by_the_environment_or_a_flag(lab: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="HPCML_REQUIRE_SIGNATURES: require_signatures is locked"):
        config.load(env={**lab, "HPCML_REQUIRE_SIGNATURES": "0"})
    with pytest.raises(ConfigError, match="--verify-key: verify_key is locked"):
        config.load({"verify_key": "/mine.pem"}, env=lab)
    s = config.load(env=lab)
    assert s.require_signatures is True and s.locked == ("require_signatures", "verify_key")


# ---- build settings in the image key --------------------------------------------------------


def test_build_settings_that_change_the_image_are_in_its_key() -> None:
    assert plan.key_build_options(["--fakeroot", "--userns", "--tmpdir", "/t", "--notest"], []) == ()
    assert plan.key_build_options(["--fix-perms", "--tmpdir=/t", "--bind=/a:/b"], ["/etc/pki:/etc/pki"]) == (
        "--fix-perms", "--bind=/a:/b", "--bind", "/etc/pki:/etc/pki")


def test_the_quickstart_keys_do_not_change_without_such_settings() -> None:
    wf = checker.load(REPO / "workflows" / "quickstart.yaml")
    plain = plan.build(wf)
    fakeroot = plan.build(wf, build_options=plan.key_build_options(["--fakeroot"], []))
    assert [i.key for i in plain.images.values()] == [i.key for i in fakeroot.images.values()]
    bound = plan.build(wf, build_options=plan.key_build_options([], ["/opt/wheels:/wheels"]))
    assert all(a.key != b.key for a, b in zip(plain.images.values(), bound.images.values()))
    # The task keys follow their image's.
    assert plain.steps[plain.step_order[0]].tasks[0].key != bound.steps[bound.step_order[0]].tasks[0].key
