"""Matrix axes written as sweep forms (range, linspace, logspace): their values, how they
reach the command and the plan document, and every error with its line:col."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from hpcml import plan
from hpcml.errors import SpecError
from hpcml.model import Workflow
from hpcml.spec.checker import loads
from hpcml.spec.expand import SweepError, sweep_values
from hpcml.spec.schema import json_schema

# The matrix mapping starts on line 9; its first axis is on line 10, column 7.
HEAD = "hpcml: 1\nname: t\nimages:\n  b: {from: scratch}\nsteps:\n  a:\n    image: b\n    run: x {v}\n    matrix:\n"


def workflow(axis: str, extra: str = "") -> Workflow:
    return loads(HEAD + f"      v: {axis}\n" + extra, "w.yaml", root="/tmp")


def values(axis: str) -> list[object]:
    m = workflow(axis).steps["a"].matrix
    assert m is not None
    return list(m.axes[0][1])


@pytest.mark.parametrize(("axis", "expected"), [
    ("{range: [0, 5]}", [0, 1, 2, 3, 4]),
    ("{range: [0, 100, 25]}", [0, 25, 50, 75]),
    ("{range: [3, -3, -2]}", [3, 1, -1]),
    ("{linspace: [0.0, 1.0, 5]}", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("{linspace: [0, 0.3, 4]}", [0.0, 0.1, 0.2, 0.3]),
    ("{linspace: [2, 7, 1]}", [2.0]),
    ("{logspace: [1e-4, 1e-1, 4]}", [0.0001, 0.001, 0.01, 0.1]),
    ("{logspace: [1.0e-4, 0.1, 4]}", [0.0001, 0.001, 0.01, 0.1]),
    ("{logspace: [1, 1000, 4]}", [1.0, 10.0, 100.0, 1000.0]),
    ("{logspace: [0.1, 1e-3, 3]}", [0.1, 0.01, 0.001]),
])
def test_sweep_values(axis: str, expected: list[object]) -> None:
    got = values(axis)
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_values_reach_the_command_and_the_plan_document_as_written_numbers() -> None:
    p = plan.build(workflow("{logspace: [1e-4, 1e-1, 4]}"))
    tasks = p.steps["a"].tasks
    assert [t.command for t in tasks] == ["x 0.0001", "x 0.001", "x 0.01", "x 0.1"]
    doc = json.dumps(plan.to_document(p))
    assert '"point": {"v": 0.001}' in doc and "0.0010000000000000002" not in doc


def test_a_sweep_axis_equals_the_same_literal_list() -> None:
    swept = plan.build(workflow("{linspace: [0, 1, 3]}"))
    listed = plan.build(workflow("[0.0, 0.5, 1.0]"))
    assert [t.key for t in swept.steps["a"].tasks] == [t.key for t in listed.steps["a"].tasks]


def test_include_and_exclude_work_with_sweep_axes() -> None:
    extra = "      seed: {range: [1, 3]}\n      exclude: [{v: 0.5, seed: 2}]\n      include: [{v: 1.0, tag: last}]\n"
    wf = loads(HEAD.replace("x {v}", "x {v} {seed} {tag}") + "      v: {linspace: [0, 1, 3]}\n" + extra,
               "w.yaml", root="/tmp")
    commands = [t.command for t in plan.build(wf).steps["a"].tasks]
    assert commands == ["x 0.0 1 ''", "x 0.0 2 ''", "x 0.5 1 ''", "x 1.0 1 last", "x 1.0 2 last"]


def test_the_point_cap_applies_to_sweeps() -> None:
    with pytest.raises(SpecError, match=r"w.yaml:10:7: matrix of step 'a' expands to 200000 points; at most 100000"):
        workflow("{range: [0, 1000]}", "      w: {range: [0, 200]}\n")


BAD = [
    # (axis, line:col, message fragment)
    ("{rang: [0, 3]}", "10:11", "unknown sweep form 'rang' for matrix axis 'v' (did you mean 'range'?); allowed: a list of values, {range: "),
    ("{}", "10:10", "matrix axis 'v' must be a list of values or exactly one sweep form; allowed: a list of values, {range:"),
    ("{range: [0, 3], linspace: [0, 1, 2]}", "10:10", "exactly one sweep form; allowed: a list of values, {range:"),
    ("{range: 5}", "10:18", "matrix axis 'v': range takes [START, STOP] or [START, STOP, STEP] (integers, STOP excluded as in Python), found integer 5"),
    ("{range: [1]}", "10:18", "range takes [START, STOP] or [START, STOP, STEP]"),
    ("{range: [0, 1.5]}", "10:22", "matrix axis 'v': range STOP must be an integer, found 1.5; use linspace for fractional values"),
    ("{range: [true, 3]}", "10:19", "range START must be an integer, found boolean true"),
    ("{range: [0, 3, 0]}", "10:25", "range STEP must not be 0"),
    ("{range: [3, 0]}", "10:18", "range [3, 0] is empty (STOP is excluded; count down with a negative STEP)"),
    ("{range: [0, 1000000]}", "10:18", "range [0, 1000000] has 1000000 values; at most 100000 are allowed"),
    ("{linspace: [0, 1]}", "10:21", "matrix axis 'v': linspace takes [START, STOP, COUNT] (COUNT evenly spaced numbers, START and STOP included), found 2 values"),
    ("{linspace: [a, 1, 3]}", "10:22", "linspace START must be a number, found 'a'"),
    ("{linspace: [0, .inf, 3]}", "10:25", "linspace STOP must be a finite number, found inf"),
    ("{linspace: [0, 1, 0]}", "10:28", "linspace COUNT must be between 1 and 100000, found 0"),
    ("{linspace: [0, 1, 2.5]}", "10:28", "linspace COUNT must be an integer, found 2.5"),
    ("{linspace: [1, 1, 3]}", "10:25", "linspace START and STOP are equal, so its 3 values would repeat"),
    ("{linspace: [1.0, 1.0000000000001, 3]}", "10:44", "linspace values collide at 12 significant digits"),
    ("{logspace: [0, 1, 3]}", "10:22", "logspace START must be greater than 0, found 0.0"),
    ("{logspace: [1, -1, 3]}", "10:25", "logspace STOP must be greater than 0, found -1.0"),
    ("{logspace: {a: 1}}", "10:21", "logspace takes [START, STOP, COUNT]"),
]


@pytest.mark.parametrize(("axis", "where", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_sweep(axis: str, where: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        workflow(axis)
    lines = [str(d) for d in info.value.diagnostics]
    assert any(line.startswith(f"w.yaml:{where}: ") and fragment in line for line in lines), "\n".join(lines)
    # A bad axis is reported once: no unknown-placeholder or empty-matrix follow-ups.
    assert len(lines) == 1, "\n".join(lines)


def test_sweep_values_is_pure_and_names_the_argument_at_fault() -> None:
    assert sweep_values("range", [0, 10, 4], 100) == (0, 4, 8)
    with pytest.raises(SweepError) as info:
        sweep_values("logspace", [1, 0, 3], 100)
    assert info.value.arg == 1


def test_the_json_schema_knows_the_sweep_forms() -> None:
    doc = yaml.safe_load(HEAD + "      v: {logspace: [1e-4, 1e-1, 4]}\n      s: {range: [0, 10, 2]}\n"
                         "      w: {linspace: [0.0, 1.0, 5]}\n      l: [1, 2]\n")
    jsonschema.Draft202012Validator(json_schema()).validate(doc)
    for bad in ({"rang": [0, 3]}, {"range": [0, 1.5]}, {"linspace": [0, 1]}, {"range": [0, 3], "linspace": [0, 1, 2]}):
        doc["steps"]["a"]["matrix"]["v"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(json_schema()).validate(doc)
