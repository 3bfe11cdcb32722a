"""Matrix expansion, pure: sweep forms (`range`, `linspace`, `logspace`) into axis values,
and axes + include/exclude into the points of a step.

The checker expands while validating (so `validate` reports what planning would meet) and
plan.py expands to make tasks; both call these functions, so the two cannot disagree.

Generated floats are rounded to 12 significant digits, so `logspace: [1e-4, 1e-1, 4]`
gives 0.0001, 0.001, 0.01, 0.1 rather than 0.0010000000000000002; `format_value` then
writes a float as Python's shortest round-tripping text (`repr`), the same for values
written out in a list.
"""

from __future__ import annotations

import itertools
import math
import re

from hpcml.errors import Diagnostic, SpecError
from hpcml.model import Matrix, Pos, Scalar

#: Sweep forms an axis may be written as instead of a list, with what each takes.
SWEEP_FORMS = {
    "range": "[START, STOP] or [START, STOP, STEP] (integers, STOP excluded as in Python)",
    "linspace": "[START, STOP, COUNT] (COUNT evenly spaced numbers, START and STOP included)",
    "logspace": "[START, STOP, COUNT] (COUNT numbers evenly spaced on a log scale from START to STOP, both > 0)",
}
#: Significant digits kept in generated floats.
SWEEP_DIGITS = 12

# YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string: such a string is a number here.
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class SweepError(ValueError):
    """A sweep form that cannot be expanded; `arg` is the index of the argument at fault
    (None when the whole form is)."""

    def __init__(self, message: str, arg: int | None = None) -> None:
        super().__init__(message)
        self.arg = arg


def sweep_values(form: str, args: list[object], limit: int) -> tuple[Scalar, ...]:
    """The values of one sweep form, at most `limit` of them; raises SweepError.

    >>> sweep_values("range", [0, 10, 4], 100)
    (0, 4, 8)
    >>> sweep_values("logspace", ["1e-4", 0.1, 4], 100)
    (0.0001, 0.001, 0.01, 0.1)
    >>> sweep_values("linspace", [0.0, 1.0, 5], 100)
    (0.0, 0.25, 0.5, 0.75, 1.0)
    """
    if form not in SWEEP_FORMS:
        raise SweepError(f"unknown sweep form {form!r}")
    sizes = (2, 3) if form == "range" else (3,)
    if len(args) not in sizes:
        raise SweepError(f"{form} takes {SWEEP_FORMS[form]}, found {len(args)} values")
    if form == "range":
        return _range(args, limit)
    start, stop = _number(args[0], 0, form, "START"), _number(args[1], 1, form, "STOP")
    count = _count(args[2], limit, form)
    if count > 1 and start == stop:
        raise SweepError(f"{form} START and STOP are equal, so its {count} values would repeat", 1)
    if form == "linspace":
        values = [start + (stop - start) * i / (count - 1) for i in range(count)] if count > 1 else [start]
    else:
        for index, bound, name in ((0, start, "START"), (1, stop, "STOP")):
            if bound <= 0:
                raise SweepError(f"logspace {name} must be greater than 0, found {bound!r}", index)
        lo, hi = math.log10(start), math.log10(stop)
        values = [10 ** (lo + (hi - lo) * i / (count - 1)) for i in range(count)] if count > 1 else [start]
    values[0], values[-1] = start, stop if count > 1 else start  # the ends exactly as written
    out = tuple(_clean(v) for v in values)
    if len(set(out)) != len(out):
        raise SweepError(f"{form} values collide at {SWEEP_DIGITS} significant digits; "
                         "use fewer values or wider bounds", 2)
    return out


def _range(args: list[object], limit: int) -> tuple[int, ...]:
    names = ("START", "STOP", "STEP")
    ints: list[int] = []
    for index, value in enumerate(args):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SweepError(f"range {names[index]} must be an integer, found {_shown(value)}; "
                             "use linspace for fractional values", index)
        ints.append(value)
    if len(ints) == 3 and ints[2] == 0:
        raise SweepError("range STEP must not be 0", 2)
    values = range(*ints)
    if not values:
        raise SweepError(f"range {ints} is empty (STOP is excluded; count down with a negative STEP)")
    if len(values) > limit:
        raise SweepError(f"range {ints} has {len(values)} values; at most {limit} are allowed")
    return tuple(values)


def _number(value: object, index: int, form: str, name: str) -> float:
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepError(f"{form} {name} must be a number, found {_shown(value)}", index)
    if not math.isfinite(value):
        raise SweepError(f"{form} {name} must be a finite number, found {value!r}", index)
    return float(value)


def _count(value: object, limit: int, form: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepError(f"{form} COUNT must be an integer, found {_shown(value)}", 2)
    if not 1 <= value <= limit:
        raise SweepError(f"{form} COUNT must be between 1 and {limit}, found {value}", 2)
    return value


def _clean(value: float) -> float:
    # 12 digits hide the last-bit error of the arithmetic; + 0.0 turns -0.0 into 0.0.
    return float(f"{value:.{SWEEP_DIGITS}g}") + 0.0


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return repr(value)


# ---- points ---------------------------------------------------------------------------


def expand_matrix(matrix: Matrix, pos: Pos | None = None) -> list[tuple[tuple[str, Scalar], ...]]:
    """Matrix points in order: the cartesian product of the axes (first axis slowest),
    minus every point matching all keys of an `exclude` entry, then `include` entries
    (GitHub Actions semantics): an entry extends every point whose axis values it matches
    (it never overwrites an axis value, but may overwrite a key an earlier include added);
    an entry that matches no point is appended as a new point. SpecError if none remain.

    Linear in points + entries: each axis value indexes the points holding it (a bit set),
    so an entry's matches are an AND of a few bit sets, never a scan of every point; a
    workflow of 2,000 include entries validates in well under a second (bench/plan.py).

    >>> m = Matrix(axes=(("lr", (0.1, 0.01)), ("seed", (1, 2))), exclude=((("seed", 2),),))
    >>> expand_matrix(m)
    [(('lr', 0.1), ('seed', 1)), (('lr', 0.01), ('seed', 1))]
    """
    names = [name for name, _ in matrix.axes]
    # Without axes there is no original point (product() of nothing is one empty point, which
    # every include entry would match and overwrite): each include entry is its own point.
    combos = list(itertools.product(*(v for _, v in matrix.axes))) if names else []
    if matrix.exclude and combos:
        index = _PointIndex(names, combos)
        dropped = 0
        for rule in matrix.exclude:
            dropped |= index.matching(rule, strict=True)
        if dropped:
            gone = index.members(dropped)
            combos = [c for i, c in enumerate(combos) if i not in gone]
    points: list[dict[str, Scalar]] = [dict(zip(names, c)) for c in combos]
    if matrix.include:
        index = _PointIndex(names, combos)
        matched: list[tuple[tuple[tuple[str, Scalar], ...], int]] = []
        added: list[dict[str, Scalar]] = []
        for rule in matrix.include:
            mask = index.matching(rule, strict=False) if combos else 0
            if mask:
                matched.append((rule, mask))
            else:
                added.append(dict(rule))
        _apply_includes(points, matched, index)
        points += added
    if not points:
        raise SpecError(_diag(pos, "matrix is empty after applying exclude"))
    if matrix.include:
        # Without include entries the points are distinct already: each axis's values are
        # (the checker refuses a repeated value), and exclude only removes points.
        _check_distinct(points, pos)
    return [tuple(p.items()) for p in points]


def _norm(value: Scalar) -> object:
    # Equal as `_same` says: YAML `true` is not `1`, but `1` and `1.0` are one value.
    return ("bool", value) if isinstance(value, bool) else value


class _PointIndex:
    """For each axis, value → the bit set of the points (by index) holding it."""

    def __init__(self, names: list[str], combos: list[tuple[Scalar, ...]]) -> None:
        self.size = len(combos)
        self.all = (1 << self.size) - 1
        self.axes: dict[str, dict[object, int]] = {}
        for column, name in enumerate(names):
            by_value: dict[object, list[int]] = {}
            for i, combo in enumerate(combos):
                by_value.setdefault(_norm(combo[column]), []).append(i)
            self.axes[name] = {v: _bits(ids) for v, ids in by_value.items()}

    def matching(self, rule: tuple[tuple[str, Scalar], ...], *, strict: bool) -> int:
        """The points whose axis values equal the rule's. `strict` (exclude): a key that is
        not an axis matches nothing; otherwise (include) such keys are not compared."""
        mask = self.all
        for key, value in rule:
            if key not in self.axes:
                if strict:
                    return 0
                continue
            mask &= self.axes[key].get(_norm(value), 0)
            if not mask:
                return 0
        return mask

    def members(self, mask: int) -> set[int]:
        """The indices set in `mask`: bit by bit when few are set (each step costs a pass
        over the mask's words), else by one pass over its binary text."""
        if mask.bit_count() * 64 < self.size:
            out = set()
            while mask:
                low = mask & -mask
                out.add(low.bit_length() - 1)
                mask ^= low
            return out
        text = bin(mask)[:1:-1]  # bit 0 first
        return {i for i, bit in enumerate(text) if bit == "1"}


def _bits(ids: list[int]) -> int:
    """The bit set of the sorted indices `ids`: a few far-apart bits are OR-ed in one by one,
    a dense run is read from one '0'/'1' string over its span; either costs at most a few
    passes over the bit set's words, never a pass per bit over all of them."""
    if not ids:
        return 0
    first, span = ids[0], ids[-1] - ids[0] + 1
    if len(ids) * 64 < span:
        out = 0
        for i in ids:
            out |= 1 << i
        return out
    chars = bytearray(b"0" * span)
    for i in ids:
        chars[i - first] = 49  # "1"
    return int(chars[::-1].decode(), 2) << first


def _apply_includes(points: list[dict[str, Scalar]], matched: list[tuple[tuple[tuple[str, Scalar], ...], int]],
                    index: _PointIndex) -> None:
    """What applying the matched include entries one after another with `dict.update`
    gives, without visiting every point per entry: a key's final value in a point is the
    one of the LAST entry matching it that has the key, and a key the point did not have
    takes its place in the order of the FIRST such entry."""
    if not matched:
        return
    keys: dict[str, None] = {}
    for rule, _ in matched:
        for key, _value in rule:
            keys.setdefault(key)
    value_of: list[dict[str, Scalar]] = [{} for _ in points]
    first_of: list[dict[str, tuple[int, int]]] = [{} for _ in points]
    for key in keys:
        with_key = [(n, rule, mask) for n, (rule, mask) in enumerate(matched) if any(k == key for k, _ in rule)]
        unset = index.all
        for _n, rule, mask in reversed(with_key):
            hit = mask & unset
            if hit:
                value = next(v for k, v in rule if k == key)
                for i in index.members(hit):
                    value_of[i][key] = value
                unset &= ~mask
        unseen = index.all
        for n, rule, mask in with_key:
            hit = mask & unseen
            if hit:
                place = (n, next(j for j, (k, _) in enumerate(rule) if k == key))
                for i in index.members(hit):
                    first_of[i][key] = place
                unseen &= ~mask
    for i, point in enumerate(points):
        if not value_of[i]:
            continue
        for key in sorted((k for k in value_of[i] if k not in point), key=first_of[i].__getitem__):
            point[key] = value_of[i][key]
        point.update((k, v) for k, v in value_of[i].items() if k in point)


def _check_distinct(points: list[dict[str, Scalar]], pos: Pos | None) -> None:
    # Two equal points would be two tasks with one key, sharing one output directory.
    seen: dict[tuple[tuple[str, str, str], ...], int] = {}
    for index, p in enumerate(points):
        ident = tuple(sorted((k, type(v).__name__, format_value(v)) for k, v in p.items()))
        if ident in seen:
            shown = ", ".join(f"{k}={format_value(v)}" for k, v in p.items())
            raise SpecError(_diag(pos, f"matrix has the point {{{shown}}} twice (points {seen[ident]} and {index}); "
                                       "an include entry repeats a point"))
        seen[ident] = index


def _same(a: Scalar, b: Scalar) -> bool:
    # YAML `true` and `1` are different values, although Python says True == 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def format_value(value: Scalar) -> str:
    """A matrix value as text in a command: bools as true/false, floats as repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _diag(pos: Pos | None, message: str) -> Diagnostic:
    if pos is None:
        return Diagnostic("<workflow>", 1, 1, message)
    return Diagnostic(pos.file, pos.line, pos.col, message)
