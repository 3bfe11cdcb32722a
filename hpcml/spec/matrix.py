"""Checks of a step's `matrix:`: axes (lists, or the sweep forms of expand.py), include and
exclude entries, and the expansion itself, so `validate` reports what planning would."""

from __future__ import annotations

from hpcml.errors import SpecError
from hpcml.model import Matrix, Scalar
from hpcml.spec.expand import SWEEP_FORMS, SweepError, expand_matrix, sweep_values
from hpcml.spec.rules import (
    AXIS_RE,
    ENV_RULE,
    MATRIX_LIST_KEYS,
    MAX_MATRIX_POINTS,
    RESERVED_AXES,
)
from hpcml.spec.shapes import Shapes, describe, suggest
from hpcml.spec.yamlpos import YNode

#: How an axis may be written, for messages.
AXIS_FORMS = "a list of values, " + ", ".join(f"{{{k}: {v}}}" for k, v in SWEEP_FORMS.items())


def task_bound(matrix: Matrix | None) -> int:
    """The most tasks `matrix` can expand to, computed from its axes' sizes without
    expanding it: the product of the axes plus one per include entry (an entry either
    extends existing points or adds one); 1 for a step without a matrix."""
    if matrix is None:
        return 1
    product = 1 if matrix.axes else 0
    for _, values in matrix.axes:
        product *= len(values)
    return product + len(matrix.include)


class MatrixChecks(Shapes):
    """The `matrix:` part of the checker."""

    def __init__(self, file: str, root: str, text: str) -> None:
        super().__init__(file, root, text)
        #: Matrices checked but not yet expanded, with their node and step, in file order.
        self.unexpanded: list[tuple[Matrix, YNode, str]] = []

    def matrix(self, node: YNode, what: str) -> Matrix | None:
        if not isinstance(node.value, dict):
            self.err(node, f"matrix of {what} must be a mapping of axis → list of values, found {describe(node.value)}")
            return None
        axes: list[tuple[str, tuple[Scalar, ...]]] = []
        # Axes with a valid name, including those whose values are bad: include and exclude
        # are checked against these, so a bad axis is reported once, without follow-ups.
        axis_names: list[str] = []
        for key, values in node.value.items():
            if key in MATRIX_LIST_KEYS:
                continue
            if self.axis_name(node.key_pos[key], key, what):
                axis_names.append(key)
                if vals := self.axis_values(values, key):
                    axes.append((key, vals))
        include = self.matrix_entries(node.value.get("include"), "include", axis_names, what)
        exclude = self.matrix_entries(node.value.get("exclude"), "exclude", axis_names, what)
        if len(axes) < len(axis_names):
            return None  # reported; a matrix without that axis would only cause follow-up errors
        if not axes and not include:
            self.err(node, f"matrix of {what} has no axes and no include entries")
            return None
        points = 1
        for _, vals in axes:
            points *= len(vals)
        if points > MAX_MATRIX_POINTS:
            self.err(node, f"matrix of {what} expands to {points} points; at most {MAX_MATRIX_POINTS} are allowed")
            return None
        matrix = Matrix(axes=tuple(axes), include=include, exclude=exclude)
        # Expanded later (expand_matrices), once the whole workflow's task count is known
        # to be within max_tasks: nothing is expanded before that check.
        self.unexpanded.append((matrix, node, what))
        return matrix

    def expand_matrices(self) -> None:
        """Expand every matrix so `validate` reports what the planner would: exclude
        removing every point, or include entries repeating a point."""
        for matrix, node, what in self.unexpanded:
            problem = _expansion_problem(matrix)
            if problem:
                self.err(node, f"matrix of {what} {problem}")

    def axis_name(self, at: tuple[int, int], key: str, what: str) -> bool:
        if not AXIS_RE.fullmatch(key):
            self.err(at, f"invalid matrix key {key!r} in {what}: use an identifier {ENV_RULE}")
            return False
        if key in RESERVED_AXES:
            self.err(at, f"matrix key {key!r} in {what} is reserved for a built-in placeholder")
            return False
        return True

    def axis_values(self, node: YNode, key: str) -> tuple[Scalar, ...]:
        if isinstance(node.value, dict):
            return self.sweep(node, key)
        if not isinstance(node.value, list) or not node.value:
            self.err(node, f"matrix axis {key!r} must be a non-empty list of values, found {describe(node.value)}; "
                           f"or write {AXIS_FORMS}")
            return ()
        out: list[Scalar] = []
        seen: set[tuple[type, Scalar]] = set()
        for item in node.value:
            value = self.matrix_value(item, key)
            if value is None:
                continue
            # Type-aware: 1, 1.0 and true are different values, but [1.0, 1, 1] repeats 1.
            if (type(value), value) in seen:
                self.err(item, f"value {value!r} appears twice in matrix axis {key!r}")
                continue
            seen.add((type(value), value))
            out.append(value)
        return tuple(out) if len(out) == len(node.value) else ()

    def sweep(self, node: YNode, key: str) -> tuple[Scalar, ...]:
        """An axis written as one sweep form, `{range: [0, 100]}`, expanded into its values."""
        forms = node.value
        if len(forms) != 1:
            self.err(node, f"matrix axis {key!r} must be a list of values or exactly one sweep form; "
                           f"allowed: {AXIS_FORMS}")
            return ()
        (form, args), = forms.items()
        if form not in SWEEP_FORMS:
            self.err(node.key_pos[form], f"unknown sweep form {form!r} for matrix axis {key!r}"
                                         f"{suggest(form, SWEEP_FORMS)}; allowed: {AXIS_FORMS}")
            return ()
        if not isinstance(args.value, list):
            self.err(args, f"matrix axis {key!r}: {form} takes {SWEEP_FORMS[form]}, found {describe(args.value)}")
            return ()
        try:
            return sweep_values(form, [a.value for a in args.value], MAX_MATRIX_POINTS)
        except SweepError as err:
            at = args.value[err.arg] if err.arg is not None and err.arg < len(args.value) else args
            self.err(at, f"matrix axis {key!r}: {err}")
            return ()

    def matrix_value(self, node: YNode, key: str) -> Scalar | None:
        value = node.value
        if value is None or isinstance(value, (list, dict)) or not isinstance(value, (str, int, float, bool)):
            self.err(node, f"matrix values for {key!r} must be strings, numbers or booleans, found {describe(value)}")
            return None
        if isinstance(value, str) and any(c < " " or c == "\x7f" for c in value):
            # Control characters have no place in a sweep value, and task keys join the
            # point's values with one (\x1f): refusing them keeps every point's key distinct.
            self.err(node, f"matrix value for {key!r} must not contain control characters (newline, tab, NUL, …)")
            return None
        return value

    def matrix_entries(
        self, node: YNode | None, kind: str, axis_names: list[str], what: str
    ) -> tuple[tuple[tuple[str, Scalar], ...], ...]:
        if node is None:
            return ()
        if not isinstance(node.value, list):
            self.err(node, f"matrix {kind} of {what} must be a list of mappings, found {describe(node.value)}")
            return ()
        out = []
        for entry in node.value:
            if not isinstance(entry.value, dict) or not entry.value:
                self.err(entry, f"each matrix {kind} entry must be a non-empty mapping, found {describe(entry.value)}")
                continue
            items: list[tuple[str, Scalar]] = []
            for key, value_node in entry.value.items():
                at = entry.key_pos[key]
                if kind == "exclude" and key not in axis_names:
                    self.err(at, f"matrix exclude key {key!r} is not an axis{suggest(key, axis_names)}; axes: {', '.join(axis_names)}")
                    continue
                if not self.axis_name(at, key, what):
                    continue
                value = self.matrix_value(value_node, key)
                if value is not None:
                    items.append((key, value))
            out.append(tuple(items))
        return tuple(out)


def _expansion_problem(matrix: Matrix) -> str | None:
    """Why planning could not expand `matrix`, or None."""
    try:
        expand_matrix(matrix)
    except SpecError as err:
        # expand_matrix says "matrix is empty …"; the caller names the step: "matrix of step 's' is empty …".
        return "; ".join(d.message.removeprefix("matrix ") for d in err.diagnostics)
    return None
