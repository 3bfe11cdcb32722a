"""The YAML reader's two parsers: libyaml's C parser (default where present) and PyYAML's
pure-Python one must give the same positioned tree; test_spec_bad.py checks they give the
same messages for every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpcml.spec import yamlpos
from hpcml.spec.yamlpos import YNode

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "workflows").glob("*.yaml"))

ODD = """\
a: |
  x
   {y}
b: >-
  f
  g

c: 'q
  r'
d: "e\\tf {x}"
e: plain
  multi line
f: [1, 2.5, 1e-4, .inf, ~, null, yes, on, 0x1f, 0o7, 1_000, 2001-01-01, "é"]
g: {x: 1, 'y': "2", z: &z [1, 2]}
h: *z
i: é é {k}
"""


def _flat(node: YNode | None, path: str = "$") -> list[object]:
    """Every value with its position, key positions, style and source span."""
    if node is None:
        return [(path, None)]
    raw = node.node
    span = (raw.start_mark.index, raw.end_mark.index, getattr(raw, "style", None)) if raw is not None else None
    scalar = None if isinstance(node.value, (list, dict)) else node.value
    out: list[object] = [(path, node.line, node.col, type(node.value).__name__, scalar, span,
                          sorted(node.key_pos.items()))]
    if isinstance(node.value, dict):
        for key, child in node.value.items():
            out += _flat(child, f"{path}.{key}")
    elif isinstance(node.value, list):
        for i, child in enumerate(node.value):
            out += _flat(child, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("text", [p.read_text() for p in EXAMPLES] + [ODD], ids=[p.name for p in EXAMPLES] + ["odd"])
def test_both_parsers_give_the_same_tree(text: str) -> None:
    pure_tree, pure_diags = yamlpos.parse(text, "w.yaml", pure=True)
    fast_tree, fast_diags = yamlpos.parse(text, "w.yaml", pure=False)
    assert pure_tree is not None
    assert _flat(fast_tree) == _flat(pure_tree)
    assert fast_diags == pure_diags


def test_libyaml_is_used_where_pyyaml_has_it() -> None:
    assert (yamlpos.CParser is not None) == yaml.__with_libyaml__


def test_an_empty_value_is_placed_as_the_pure_parser_places_it() -> None:
    # libyaml puts an empty value at the next token; the reference is just after the ':'.
    tree, _ = yamlpos.parse("a: {x: }\n", "w.yaml", pure=False)
    assert tree is not None
    x = tree.value["a"].value["x"]
    assert (x.value, x.line, x.col) == (None, 1, 7)


def test_syntax_errors_are_worded_by_the_pure_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "hpcml: 1\nname: [t\nsteps: {}\n"
    fast = yamlpos.parse(text, "w.yaml", pure=False)
    monkeypatch.setenv(yamlpos.PURE_ENV, "1")
    assert yamlpos.parse(text, "w.yaml") == fast
    assert fast[1][0].message.startswith("invalid YAML: while parsing a flow sequence")


def test_without_libyaml_the_pure_parser_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlpos, "CParser", None)  # as on a PyYAML built without libyaml
    tree, diags = yamlpos.parse(ODD, "w.yaml", pure=False)
    assert _flat(tree) == _flat(yamlpos.parse(ODD, "w.yaml", pure=True)[0]) and not diags
