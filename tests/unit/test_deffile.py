"""deffile: golden files for every rendered form, binding, validation of hand-written files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcml.render import deffile
from hpcml.errors import SpecError
from hpcml.model import FileCopy, Image, Pos

REPO = Path(__file__).resolve().parents[2]
POS = Pos("workflow.yaml", 7, 3)

FULL = Image(
    "torch",
    "debootstrap",
    "bookworm",
    apt=("python3", "python3-pip"),
    pip=("numpy==2.1.*", "scikit-learn", "weird name;rm -rf /"),
    requirements="requirements.txt",
    files=(FileCopy("src/", "/opt/src"), FileCopy("conf/app.toml", "/etc/app.toml")),
    env=(("PYTHONUNBUFFERED", "1"), ("GREETING", "it's $HOME `x`")),
    post="python3 -c 'import sklearn'\ncat > /etc/motd <<EOF\nhello\nEOF",
    test="python3 -c 'import numpy'",
    runscript='exec python3 "$@"',
    labels=(("org.example.team", "vision"),),
    pos=POS,
)

FORMS = {
    "scratch-busybox.def": Image("tiny", "scratch", "", files=(FileCopy("bin/busybox", "/bin/sh"),), shell="sh"),
    "debootstrap-full.def": FULL,
    "docker.def": Image("py", "docker", "python:3.12-slim", pip=("six",)),
    "oras.def": Image("o", "oras", "ghcr.io/lab/base:1.0", env=(("A", "b c"),)),
    "localimage.def": Image("l", "localimage", "images/base.sif", post="echo hi > /hello"),
    "catalog.def": Image("c", "catalog", "torch:2.4", pip=("einops",)),
    "image-parent.def": Image("child", "image", "torch", files=(FileCopy("src", "/opt/src"),), test="true"),
    "sh-shell.def": Image("bb", "image", "tiny", shell="sh", post="echo built > /built", test="test -f /built"),
    "debootstrap-mirror.def": Image("m", "debootstrap", "bookworm", mirror="http://mirror.example/debian"),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_rendered_forms_match_golden(name: str, golden) -> None:
    golden(name, deffile.render(FORMS[name]))


def test_deffile_passes_through_validated(golden) -> None:
    text = (REPO / "definitions/custom.def").read_text()
    image = Image("custom", "deffile", "definitions/custom.def")
    out = deffile.render(image, source=text)
    assert out == text  # used as written: what is built is what the user wrote
    golden("deffile-passthrough.def", out)


def test_dockerfile_is_converted(golden) -> None:
    text = (REPO / "definitions/Dockerfile").read_text()
    out = deffile.render(Image("d", "dockerfile", "definitions/Dockerfile"), source=text)
    assert "Bootstrap: docker\nFrom: debian:bookworm-slim\n" in out
    assert "org.example.purpose reference" in out
    golden("dockerfile-converted.def", out)


def test_render_is_deterministic() -> None:
    assert all(deffile.render(img) == deffile.render(img) for img in FORMS.values())


def test_canonical_text_has_no_identity_or_site_paths() -> None:
    text = deffile.render(FORMS["image-parent.def"])
    assert f"From: {deffile.PARENT_PLACEHOLDER}\n" in text
    assert "org.hpcml" not in text and "child" not in text


def test_values_are_shell_quoted() -> None:
    text = deffile.render(FULL)
    assert "'weird name;rm -rf /'" in text
    assert "export GREETING='it'\"'\"'s $HOME `x`'" in text


def test_post_prelude_is_posix_for_sh_images() -> None:
    text = deffile.render(FORMS["sh-shell.def"])
    assert "%post\nset -eu\n" in text
    assert "pipefail" not in text and "-c /bin/bash" not in text
    script = text.split("%post\n", 1)[1].split("\n%", 1)[0]
    # dash is a strict POSIX shell: the prelude must parse under it.
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_bash_post_parses() -> None:
    script = deffile.render(FULL).split("%post -c /bin/bash\n", 1)[1].split("\n%", 1)[0]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_no_post_without_work() -> None:
    assert "%post" not in deffile.render(FORMS["scratch-busybox.def"])


@pytest.mark.parametrize(
    "image, message",
    [
        (Image("x", "docker", "a b", pos=POS), "docker reference 'a b' cannot be written"),
        (Image("x", "scratch", "", files=(FileCopy("a b", "/x"),), pos=POS), "file source 'a b'"),
        (Image("x", "scratch", "", files=(FileCopy("a", "rel"),), pos=POS), "must be an absolute path"),
        (Image("x", "scratch", "", env=(("1BAD", "v"),), pos=POS), "env name '1BAD' is invalid"),
        (Image("x", "scratch", "", labels=(("a b", "v"),), pos=POS), "label name 'a b' is invalid"),
        (Image("x", "scratch", "", labels=(("k", "v\n%post"),), pos=POS), "value must be one line"),
        (Image("x", "scratch", "", post="echo\n%runscript\nevil", pos=POS), "line 2 starts with '%'"),
        (Image("x", "debootstrap", "bookworm", mirror="http://x/\nFrom: y", pos=POS), "mirror"),
        # A quoted multi-line env value must not open a %setup section (it runs on the build host).
        (Image("x", "scratch", "", env=(("X", "\n%setup\ntouch /tmp/pwned\n#"),), pos=POS),
         "env X: line 2 of the value starts with '%'"),
        (Image("x", "scratch", "", env=(("X", "a\n  %post"),), pos=POS), "env X: line 2"),
        (Image("x", "scratch", "", env=(("X", "a\r\nb"),), pos=POS), "carriage return"),
        (Image("x", "scratch", "", files=(FileCopy("#x", "/x"),), pos=POS), "file source '#x' cannot be written"),
        # Apptainer globs %files sources: d[1].txt copies d1.txt while the key hashed d[1].txt.
        (Image("x", "scratch", "", files=(FileCopy("d[1].txt", "/x"),), pos=POS), "expands as a pattern"),
        (Image("x", "scratch", "", files=(FileCopy("src/*.py", "/x/"),), pos=POS), "expands as a pattern"),
        (Image("x", "scratch", "", requirements="#r.txt", pos=POS), "file source '#r.txt' cannot be written"),
    ],
)
def test_unsafe_values_are_refused(image: Image, message: str) -> None:
    with pytest.raises(SpecError) as err:
        deffile.render(image)
    assert str(err.value).startswith("workflow.yaml:7:3: image 'x': ")
    assert message in str(err.value)


# ---- bind -----------------------------------------------------------------------------


def test_bind_substitutes_parent_and_stamps_labels() -> None:
    text = deffile.render(FULL.__class__("c", "image", "torch", labels=(("k", "v"),)))
    bound = deffile.bind(text, parent_sif="./torch.sif", name="c", key="ab12", version="0.1.0")
    assert "From: ./torch.sif\n" in bound and deffile.PARENT_PLACEHOLDER not in bound
    assert "%labels\norg.hpcml.image c\norg.hpcml.key ab12\norg.hpcml.version 0.1.0\nk v\n" in bound


def test_bind_adds_labels_section_when_missing() -> None:
    bound = deffile.bind(deffile.render(FORMS["docker.def"]), key="ff")
    assert bound.endswith("\n%labels\norg.hpcml.key ff\n")


def test_bind_parent_refuses_bad_paths_and_user_text() -> None:
    text = deffile.render(FORMS["catalog.def"])
    for bad in ("/a b.sif", "/x\nBootstrap: docker", "/x'.sif"):
        with pytest.raises(ValueError):
            deffile.bind_parent(text, bad)
    # A placeholder inside a user's script is not the header line and is never touched.
    sneaky = deffile.render(Image("s", "docker", "debian", post="echo 'From: {PARENT_SIF}'"))
    with pytest.raises(ValueError):
        deffile.bind_parent(sneaky, "/p.sif")


# ---- hand-written files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("%post\n  true\n", "x.def:1:1", "no 'Bootstrap:' header"),
        ("Bootstrap: dockerr\nFrom: a\n", "x.def:1:1", "unknown Bootstrap 'dockerr' (allowed: arch, busybox"),
        ("Bootstrap: docker\n", "x.def:1:1", "needs a 'From:' header"),
        ("Bootstrap: debootstrap\nMirrorURL: http://x\n", "x.def:1:1", "needs an 'OSVersion:' header"),
        ("Bootstrap: docker\nFrom: a\nFoo: b\n", "x.def:3:1", "unknown header keyword 'Foo'"),
        ("Bootstrap: docker\nFrom: a\n\n%setup\n  touch /etc/x\n", "x.def:4:1", "%setup runs on the build host"),
        ("Bootstrap: docker\nFrom: a\n%postt\n  x\n", "x.def:3:1", "unknown section %postt (allowed:"),
        ("Bootstrap: docker\nFrom: a\njunk line\n", "x.def:3:1", "expected 'Keyword: value'"),
        # Apptainer 1.4 fails such a file ("invalid section(s) specified"); validate said ok.
        ("Bootstrap: docker\nFrom: a\n%post\n  true\n  %setup\n", "x.def:5:1", "an indented line starting with '%'"),
    ],
)
def test_handwritten_definition_errors(text: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        deffile.parse_definition(text, "x.def")
    assert str(err.value).startswith(where + ": ")
    assert message in str(err.value)


def test_handwritten_definition_reports_every_problem() -> None:
    with pytest.raises(SpecError) as err:
        deffile.parse_definition("Foo: 1\n%pre\n x\n%bogus\n", "x.def")
    assert len(err.value.diagnostics) == 4


def test_dockerfile_without_from() -> None:
    with pytest.raises(SpecError, match=r"^D:1:1: Dockerfile has no FROM instruction"):
        deffile.render(Image("d", "dockerfile", "D"), source="RUN true\n")


# ---- parser check: every generated file has the structure Apptainer reads -------------


@pytest.mark.parametrize("name", sorted(FORMS))
def test_generated_files_parse_as_definitions(name: str) -> None:
    image = FORMS[name]
    parent = "/p.sif" if image.base_kind in ("image", "catalog") else None
    text = deffile.bind(deffile.render(image), parent_sif=parent, key="k")
    parsed = deffile.parse_definition(text, name)
    assert parsed.bootstrap in {"scratch", "debootstrap", "docker", "oras", "localimage"}
    assert all(s[0] in deffile.SECTIONS for s in parsed.sections)


def test_generated_docker_file_parses_with_spython(tmp_path: Path) -> None:
    from spython.main.parse.parsers import SingularityParser

    path = tmp_path / "docker.def"
    path.write_text(deffile.render(FORMS["docker.def"]))
    recipe = SingularityParser(str(path)).recipe["spython-base"]
    assert recipe.fromHeader == "python:3.12-slim"
    assert any("pip install six" in line for line in recipe.install)
