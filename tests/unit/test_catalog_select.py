"""images.select (which images a build covers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml import plan
from hpcml.images import ensure as images
from hpcml.spec import checker as spec
from hpcml.errors import HpcmlError

WF = """hpcml: 1
name: sel
images:
  base: {from: "debootstrap:bookworm"}
  mid: {from: base, env: {A: "1"}}
  leaf: {from: mid}
  other: {from: base}
steps:
  s: {image: leaf, run: "true"}
"""


@pytest.fixture
def p(tmp_path: Path) -> plan.Plan:  # type: ignore[name-defined]
    (tmp_path / "workflow.yaml").write_text(WF)
    return plan.build(spec.load(tmp_path / "workflow.yaml"))


def test_select_adds_parents_in_plan_order(p) -> None:  # noqa: ANN001
    assert images.select(p, None) == list(p.image_order)
    assert images.select(p, ["leaf"]) == ["base", "mid", "leaf"]
    assert images.select(p, ["other", "mid"]) == [n for n in p.image_order if n in {"base", "mid", "other"}]


def test_select_unknown_image_lists_known(p) -> None:  # noqa: ANN001
    with pytest.raises(HpcmlError, match="no image 'nope'.*images: "):
        images.select(p, ["nope"])


def _publish_fake(cat_root: Path, key: str, name: str, tmp: Path) -> None:
    from hpcml.images.catalog import Catalog
    from hpcml.images.manifest import new_manifest

    src = tmp / f"{name}.sif"
    src.write_bytes(b"fake SIF bytes of " + name.encode())
    cat = Catalog(cat_root)
    cat.publish(src, new_manifest(key=key, name=name, definition="x", inputs=[], parent_key=None,
                                  sif=src, apptainer_version="test"))


def test_a_cached_image_does_not_pull_in_its_parents(p, tmp_path: Path) -> None:  # noqa: ANN001
    """A lab member pushed `leaf` only: a run that needs `leaf` must not rebuild base and mid."""
    from hpcml import config

    lab = tmp_path / "lab"
    _publish_fake(lab, p.images["leaf"].key, "leaf", tmp_path)
    settings = config.load({"catalogs": [str(tmp_path / "mine"), str(lab)], "cache_dir": str(tmp_path / "c")},
                           env={"HOME": str(tmp_path), "HPCML_SITE_CONFIG": str(tmp_path / "none.toml")})
    path = images.catalog_path(settings)
    assert images.needed(p, ["leaf"], path) == ["leaf"]
    # asked for explicitly, a missing parent is still built; `other` still needs base
    assert images.needed(p, ["leaf", "mid"], path) == ["base", "mid", "leaf"]
    assert images.needed(p, ["other"], path) == ["base", "other"]
    assert images.needed(p, None, path) == list(p.image_order)
    report = images.build_images(p, settings, names=["leaf"])  # nothing to build: no apptainer call
    assert {n: r.state for n, r in report.results.items()} == {"leaf": "cached"}


def test_an_unsigned_build_is_refused_before_it_starts_when_signatures_are_required(p, tmp_path: Path) -> None:  # noqa: ANN001
    """Without signing_key the image used to be built and published "done", then refused
    by every lab member on first use (signature not found)."""
    from hpcml import config

    pub = tmp_path / "lab.pub.pem"
    pub.write_text("not read: nothing is verified before the refusal\n")
    settings = config.load({"catalogs": [str(tmp_path / "lab")], "cache_dir": str(tmp_path / "c"),
                            "require_signatures": True, "verify_key": str(pub)},
                           env={"HOME": str(tmp_path), "HPCML_SITE_CONFIG": str(tmp_path / "none.toml")})
    report = images.build_images(p, settings, names=["base"])  # no apptainer is run
    result = report.results["base"]
    assert result.state == "failed" and "signing_key" in result.error and "require_signatures" in result.error
    assert not list((tmp_path / "lab").glob("meta/*.json"))
