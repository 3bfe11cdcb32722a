"""Regressions found by QA (writing workflows from the docs as a new user would).

Each test names the bug: where `validate` said "ok" but `plan`/`compile` then failed, where
an error pointed at the wrong column, or where a converted definition was wrong.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcml import plan
from hpcml.render import deffile
from hpcml.spec import checker as spec
from hpcml.cli.app import main
from hpcml.errors import SpecError

HEAD = "hpcml: 1\nname: q\nimages:\n  x: {from: scratch}\nsteps:\n"


def write(root: Path, text: str, name: str = "w.yaml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def messages(err: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [f"{d.line}:{d.col}: {d.message}" for d in err.value.diagnostics]


def test_include_only_key_is_empty_where_the_entry_did_not_apply(tmp_path: Path) -> None:
    # docs/spec.md's own matrix example adds `opt` to the lr=0.1 points only; using {opt}
    # in run: validated, then `plan` failed with "matrix point 2 has no value for {opt}".
    text = HEAD + (
        "  s:\n    image: x\n    run: train --lr {lr} --opt {opt}\n"
        "    matrix:\n      lr: [0.1, 0.01]\n      include:\n        - {lr: 0.1, opt: adam}\n"
    )
    p = plan.build(spec.load(write(tmp_path, text)))
    assert [t.command for t in p.steps["s"].tasks] == ["train --lr 0.1 --opt adam", "train --lr 0.01 --opt ''"]


def test_every_doc_matrix_example_plans(tmp_path: Path) -> None:
    text = HEAD + (
        "  s:\n    image: x\n    run: echo {lr} {seed} {opt}\n    matrix:\n      lr: [0.1, 0.01]\n"
        "      seed: [1, 2]\n      exclude:\n        - {lr: 0.01, seed: 2}\n      include:\n"
        "        - {lr: 1.0, seed: 1}\n        - {lr: 0.1, opt: adam}\n"
    )
    p = plan.build(spec.load(write(tmp_path, text)))
    assert [dict(t.point) for t in p.steps["s"].tasks] == [
        {"lr": 0.1, "seed": 1, "opt": "adam"}, {"lr": 0.1, "seed": 2, "opt": "adam"},
        {"lr": 0.01, "seed": 1}, {"lr": 1.0, "seed": 1},
    ]


def test_matrix_emptied_by_exclude_is_a_validate_error(tmp_path: Path) -> None:
    text = HEAD + "  s:\n    image: x\n    run: echo {a}\n    matrix:\n      a: [1]\n      exclude: [{a: 1}]\n"
    with pytest.raises(SpecError) as err:
        spec.load(write(tmp_path, text))
    # One message, at the matrix, and no cascade about {a} being unknown.
    assert messages(err) == ["10:7: matrix of step 's' is empty after applying exclude"]


@pytest.mark.parametrize(
    ("run", "where"),
    [
        (">\n      echo {lr}\n      and {lrr}\n", "10:11"),          # folded block
        ("echo {lr}\n      plain {lrr}\n", "9:13"),                # multi-line plain scalar
        ('"echo \\t{lrr}"\n', "8:18"),                             # double-quoted with an escape
        ("'it''s {lrr}'\n", "8:17"),                                # single-quoted with an escape
    ],
)
def test_unknown_placeholder_is_reported_at_its_exact_column(tmp_path: Path, run: str, where: str) -> None:
    text = HEAD + f"  s:\n    image: x\n    run: {run}    matrix: {{lr: [1]}}\n"
    with pytest.raises(SpecError) as err:
        spec.load(write(tmp_path, text))
    assert messages(err)[0].startswith(f"{where}: unknown placeholder {{lrr}}")


def test_symlink_inside_the_workflow_is_refused_by_validate(tmp_path: Path) -> None:
    # Planning refuses links (their target can change under the image key); validate said ok.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x\n")
    os.symlink("a.py", tmp_path / "src" / "b.py")
    text = HEAD.replace("{from: scratch}", "{from: scratch, files: {src: /opt/src}}") + "  s: {image: x, run: echo}\n"
    with pytest.raises(SpecError) as err:
        spec.load(write(tmp_path, text))
    assert messages(err) == [
        "4:30: files source 'src': src/b.py: is a symbolic link, which hpcml does not follow; "
        "copy the file or name its target instead"
    ]


def test_validate_parses_handwritten_files(tmp_path: Path) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "bad.def").write_text("Bootstrap: docker\nFrom: alpine\n%setup\n  touch x\n")
    (tmp_path / "defs" / "Dockerfile").write_text("RUN echo\n")
    (tmp_path / "defs" / "li.def").write_text("Bootstrap: localimage\nFrom: base.sif\n")
    text = (
        "hpcml: 1\nname: q\nimages:\n  a: {deffile: defs/bad.def}\n  b: {dockerfile: defs/Dockerfile}\n"
        "  c: {deffile: defs/li.def}\nsteps:\n  s: {image: a, run: echo}\n"
    )
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert f"{tmp_path}/defs/bad.def:3:1: section %setup runs on the build host" in out
    assert f"{tmp_path}/defs/Dockerfile:1:1: Dockerfile has no FROM instruction" in out
    assert "w.yaml:6:16: defs/li.def: input file 'base.sif' does not exist" in out


def test_text_the_renderer_refuses_is_a_validate_error(tmp_path: Path) -> None:
    text = HEAD.replace("{from: scratch}", "{from: scratch, post: \"echo\\n%files\\n\"}") + "  s: {image: x, run: echo}\n"
    with pytest.raises(SpecError) as err:
        spec.load(write(tmp_path, text))
    assert "line 2 starts with '%'" in messages(err)[0]


def test_from_reference_errors_say_what_is_expected(tmp_path: Path) -> None:
    text = HEAD.replace("{from: scratch}", "{from: 'catalog:Torch'}") + "  s: {image: x, run: echo}\n"
    with pytest.raises(SpecError) as err:
        spec.load(write(tmp_path, text))
    assert "expected NAME or NAME:TAG" in messages(err)[0]


def test_dockerfile_exec_form_and_multi_labels_convert_correctly() -> None:
    text = (
        'FROM alpine:3.19\nLABEL a=b c="d e"\nLABEL maintainer "Jane Doe"\n'
        'ENTRYPOINT ["python3"]\nCMD ["-c", "print(1)"]\n'
    )
    out = deffile.convert_dockerfile(text, "Dockerfile")
    labels = out.split("%labels\n", 1)[1].split("%", 1)[0].splitlines()
    assert labels == ["a b", "c d e", "maintainer Jane Doe"]
    assert "exec python3 -c 'print(1)' \"$@\"" in out
    runscript = out.split("%runscript\n", 1)[1].split("%", 1)[0]
    subprocess.run(["bash", "-n", "-c", runscript], check=True)


# ---- images and catalogs --------------------------------------------------------------


def test_child_image_inherits_its_parents_shell(tmp_path: Path) -> None:
    # A child of a busybox (`shell: sh`) image rendered `%post -c /bin/bash`, which it lacks.
    text = (
        "hpcml: 1\nname: q\nimages:\n  base: {from: scratch, shell: sh}\n"
        "  child: {from: base, post: echo hi}\n  grand: {from: child, post: echo hi}\n"
        "  own: {from: base, shell: bash, post: echo hi}\nsteps:\n  s: {image: grand, run: echo}\n"
    )
    wf = spec.load(write(tmp_path, text))
    assert {n: i.shell for n, i in wf.images.items()} == {"base": "sh", "child": "sh", "grand": "sh", "own": "bash"}
    p = plan.build(wf)
    assert "%post\nset -eu\n" in p.images["grand"].definition
    assert "%post -c /bin/bash\n" in p.images["own"].definition


def _publish(cat, tmp_path: Path, key: str, name: str, data: bytes = b"SIF") -> None:  # noqa: ANN001
    from hpcml.images.manifest import new_manifest

    src = tmp_path / f"{key[:8]}.src"
    src.write_bytes(data)
    manifest = new_manifest(key=key, name=name, definition="Bootstrap: scratch\n", inputs=[],
                            parent_key=None, sif=src, apptainer_version="1.4.5")
    cat.publish(src, manifest, log_text="log\n")


def test_catalog_finds_an_untagged_image_by_its_name(tmp_path: Path) -> None:
    # docs/catalog.md: "hpcml build … then hpcml catalog push torch"; untagged, that said
    # "no image 'torch'". A bare name now falls back to the newest image of that name.
    from hpcml.images.catalog import Catalog
    from hpcml.images.search import CatalogPath
    from hpcml.errors import CatalogError

    cat = Catalog(tmp_path / "cat")
    _publish(cat, tmp_path, "a" * 64, "torch")
    path = CatalogPath([cat], tmp_path / "cache")
    assert path.find("torch").key == "a" * 64
    with pytest.raises(CatalogError, match="no image 'torch:v1'"):
        path.find("torch:v1")  # an explicit tag never falls back
    cat.set_tag("torch", "latest", "a" * 64)
    assert path.find("torch").key == "a" * 64


def test_catalog_tag_names_must_be_usable_from_a_workflow(tmp_path: Path) -> None:
    # `from: catalog:NAME:TAG` takes lowercase names only; `catalog tag X Bad:v1` was accepted.
    from hpcml.images.catalog import Catalog
    from hpcml.errors import CatalogError

    with pytest.raises(CatalogError, match="invalid image name 'Bad': use lowercase"):
        Catalog(tmp_path / "cat").tag_path("Bad", "v1")
    Catalog(tmp_path / "cat").tag_path("torch", "V1.2")  # tags may use capitals


def test_in_place_edit_with_restored_mtime_is_still_detected(tmp_path: Path) -> None:
    from hpcml.images.catalog import Catalog
    from hpcml.images.search import CatalogPath
    from hpcml.errors import CatalogError

    cat = Catalog(tmp_path / "cat")
    _publish(cat, tmp_path, "c" * 64, "base", data=b"0123456789")
    path = CatalogPath([cat], tmp_path / "cache")
    entry = path.resolve("c" * 64)
    assert entry is not None  # hashed once, and remembered
    sif = entry.sif
    st = sif.stat()
    os.chmod(sif, 0o644)
    with open(sif, "r+b") as f:
        f.seek(3)
        f.write(b"X")
    os.chmod(sif, st.st_mode)
    os.utime(sif, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CatalogError, match=r"is corrupt: .*delete both files"):
        path.resolve("c" * 64)
