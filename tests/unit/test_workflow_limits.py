"""Workflow size limits (docs/security.md#workflow-size-limits): the total task count is
checked from the axes' sizes before anything is expanded, and include/exclude matching is
the same as applying each entry to every point, one after another (the old, quadratic
reading is kept here as the reference)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from hpcml import config
from hpcml.errors import ConfigError, SpecError
from hpcml.model import Matrix, Scalar
from hpcml.spec import checker
from hpcml.spec.expand import _same, expand_matrix
from hpcml.spec.matrix import task_bound

HEAD = "hpcml: 1\nname: t\nimages:\n  bb: {from: scratch, shell: sh}\ndefaults: {image: bb}\nsteps:\n"


def big(steps: int) -> str:
    return HEAD + "".join(f"  s{i}:\n    matrix: {{a: {{range: [0, 1000]}}, b: {{range: [0, 100]}}}}\n"
                          f"    run: echo {{a}} {{b}}\n" for i in range(steps))


def test_ten_steps_of_100k_points_are_refused_at_the_step_that_passes_the_limit(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        checker.loads(big(10), "workflow.yaml", root=str(tmp_path), max_tasks=100_000)
    (diag,) = err.value.diagnostics
    # Step s1 (line 10, column 3) is the one whose 100,000 tasks pass the limit.
    assert (diag.line, diag.col) == (10, 3)
    assert "up to 1,000,000 tasks" in diag.message and "step 's1'" in diag.message
    assert "at most 100,000" in diag.message and "max_tasks" in diag.message


def test_the_limit_is_the_setting(tmp_path: Path) -> None:
    checker.loads(big(2), "workflow.yaml", root=str(tmp_path), max_tasks=200_000)
    with pytest.raises(SpecError, match="at most 150,000"):
        checker.loads(big(2), "workflow.yaml", root=str(tmp_path), max_tasks=150_000)


def test_max_tasks_is_read_from_the_lab_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site.toml"
    site.write_text("max_tasks = 250000\nlocked = ['max_tasks']\n")
    monkeypatch.setenv("HPCML_SITE_CONFIG", str(site))
    monkeypatch.setenv("HPCML_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("HPCML_MAX_TASKS", raising=False)
    checker.loads(big(2), "workflow.yaml", root=str(tmp_path))  # 200,000 ≤ 250,000
    monkeypatch.setenv("HPCML_MAX_TASKS", "300000")
    with pytest.raises(ConfigError, match="max_tasks is locked"):
        config.load()


def test_max_tasks_below_the_floor_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 1000"):
        config.load(env={"HPCML_MAX_TASKS": "10", "HPCML_SITE_CONFIG": "/nonexistent", "HOME": "/nonexistent"})


def test_task_bound_is_computed_without_expanding() -> None:
    m = Matrix(axes=(("a", tuple(range(1000))), ("b", tuple(range(1000)))), include=((("x", 1),),))
    assert task_bound(m) == 1_000_001
    assert task_bound(None) == 1
    assert task_bound(Matrix(axes=(), include=((("x", 1),), (("x", 2),)))) == 2


def _reference(matrix: Matrix) -> list[tuple[tuple[str, Scalar], ...]]:
    names = [name for name, _ in matrix.axes]
    points = [dict(zip(names, vs)) for vs in itertools.product(*(v for _, v in matrix.axes))] if names else []
    for rule in matrix.exclude:
        points = [p for p in points if not all(k in p and _same(p[k], v) for k, v in rule)]
    originals = len(points)
    for rule in matrix.include:
        matched = False
        for p in points[:originals]:
            if all(_same(p[k], v) for k, v in rule if k in names and k in p):
                p.update(rule)
                matched = True
        if not matched:
            points.append(dict(rule))
    return [tuple(p.items()) for p in points]


def _typed(points: list[tuple[tuple[str, Scalar], ...]]) -> list[tuple[tuple[str, type, Scalar], ...]]:
    return [tuple((k, type(v), v) for k, v in p) for p in points]


@pytest.mark.parametrize("seed", range(300))
def test_include_and_exclude_match_the_one_by_one_reading(seed: int) -> None:
    r = random.Random(seed)
    pool: list[Scalar] = [0, 1, 2, True, False, 1.0, "a", "b", 0.5]
    axes = []
    for a in range(r.randint(1, 3)):
        values: list[Scalar] = []
        for v in r.sample(pool, r.randint(1, 4)):
            if not any(_same(v, w) for w in values):
                values.append(v)
        axes.append((f"a{a}", tuple(values)))
    keys = [n for n, _ in axes] + ["x", "y"]
    include = tuple(tuple((k, r.choice(pool)) for k in r.sample(keys, r.randint(1, 3))) for _ in range(r.randint(0, 5)))
    exclude = tuple(((r.choice(axes)[0], r.choice(pool)),) for _ in range(r.randint(0, 2)))
    matrix = Matrix(axes=tuple(axes), include=include, exclude=exclude)
    expected = _reference(matrix)
    try:
        got = expand_matrix(matrix)
    except SpecError as err:
        assert not expected or "twice" in str(err)
        return
    assert _typed(got) == _typed(expected)
