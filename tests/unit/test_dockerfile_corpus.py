"""The Dockerfile corpus (tests/corpus/dockerfiles) through spython: what each instruction
became, and every instruction the conversion would get wrong refused with its line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcml.errors import SpecError
from hpcml.render import deffile

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "dockerfiles"


def convert(name: str) -> tuple[str, deffile.Definition]:
    text = deffile.convert_dockerfile((CORPUS / name).read_text(), name)
    return text, deffile.parse_definition(text, name)


def section(parsed: deffile.Definition, stage: int, name: str) -> list[str]:
    return [line for s in parsed.stages[stage].sections if s[0] == name for line in s[3] if line.strip()]


def test_every_post_is_valid_shell() -> None:
    for path in sorted(CORPUS.glob("*.Dockerfile")):
        if path.name == "refused.Dockerfile":
            continue
        _text, parsed = convert(path.name)
        for stage in parsed.stages:
            for name, _args, _line, body in stage.sections:
                if name in ("post", "runscript", "startscript", "environment"):
                    done = subprocess.run(["bash", "-n"], check=False, input="\n".join(body), text=True, capture_output=True)
                    assert done.returncode == 0, (path.name, name, done.stderr)


def test_multistage_arg_env_copy_from_and_exec_forms() -> None:
    text, parsed = convert("multistage.Dockerfile")
    build, final = parsed.stages
    assert build.header["from"][0].strip() == "debian:bookworm-slim"  # ARG default in FROM
    assert build.name == "build" and final.name == "stage-1"  # the unnamed final stage is its own stage
    post = section(parsed, 0, "post")
    # ENV and ARG reach RUN's commands as environment variables, as in Docker.
    assert {"export VERSION=1.2", "export PIP_NO_CACHE_DIR=1", 'export LEGACY_FORM="legacy value"'} <= set(post)
    assert not any("a comment inside a continuation" in line for line in post)
    assert section(parsed, 0, "environment")[-1] == 'export LEGACY_FORM="legacy value"'
    assert [s[1] for s in final.sections if s[0] == "files"] == ["from build"]
    assert section(parsed, 1, "files") == ["/src /opt/app"]
    assert section(parsed, 1, "labels") == ["org.example.team vision", "org.example.note two words"]
    assert section(parsed, 1, "runscript") == ['exec python3 /opt/app/app.py --port 8080 "$@"']
    assert "line 17: EXPOSE 8080" in text  # said in %help, not silently dropped
    assert [rel for rel, _dst, _n in parsed.files()] == ["app.py", "requirements.txt"]


def test_shell_forms_workdir_and_notes() -> None:
    text, parsed = convert("shell-forms.Dockerfile")
    assert section(parsed, 0, "runscript") == ["cd /opt", 'exec python3 /opt/app.py --verbose "$@"']
    assert section(parsed, 0, "files") == ["app.py /opt/app.py"]  # ADD of a plain file is a COPY
    assert "line 5: VOLUME /data" in text and "line 6: STOPSIGNAL SIGTERM" in text
    _text, only = convert("entrypoint-shell.Dockerfile")
    assert section(only, 0, "runscript") == ['exec python3 -m http.server "$@"']


def test_what_the_conversion_gets_wrong_is_refused_with_its_line() -> None:
    with pytest.raises(SpecError) as err:
        deffile.convert_dockerfile((CORPUS / "refused.Dockerfile").read_text(), "refused.Dockerfile")
    found = {(d.line, d.message.split(" ")[0]) for d in err.value.diagnostics}
    assert found == {
        (1, "FROM"), (2, "ARG"), (3, "USER"), (4, "SHELL"), (5, "HEALTHCHECK"), (6, "ONBUILD"), (7, "RUN"),
        (8, "RUN"), (9, "COPY"), (10, "COPY"), (11, "COPY"), (12, "ADD"), (13, "ADD"), (14, "RUN"),
        (17, "FROM"), (18, "unknown"), (19, "a"),
    }
    # The here-document's body (lines 15-16) is not read as instructions.
    assert all(d.line not in (15, 16) for d in err.value.diagnostics)


def test_a_corpus_dockerfile_as_a_workflow_image(tmp_path: Path) -> None:
    from hpcml import plan
    from hpcml.spec import checker

    (tmp_path / "Dockerfile").write_text((CORPUS / "multistage.Dockerfile").read_text())
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    wf = tmp_path / "workflow.yaml"
    wf.write_text("hpcml: 1\nname: d\nimages:\n  app: {dockerfile: Dockerfile}\nsteps:\n  s: {image: app, run: 'true'}\n")
    p = plan.build(checker.load(wf, allow_setup=()))
    assert [rel for rel, _ in p.images["app"].inputs] == ["app.py", "requirements.txt"]
    (tmp_path / "Dockerfile").write_text((CORPUS / "refused.Dockerfile").read_text())
    with pytest.raises(SpecError, match=r"Dockerfile:3:1: USER is not translated"):
        checker.load(wf, allow_setup=())
