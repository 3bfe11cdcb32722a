"""Safe YAML reading that keeps where every value was written.

The document is composed (not constructed) with PyYAML's SafeLoader and walked into
`YNode` trees, so every key and value carries its 1-based line and column. On the way
it rejects what a workflow file never needs and an attacker could abuse: explicit tags
(`!!python/object`, `!foo`), merge keys, non-string keys, duplicate keys, and alias
expansion beyond a small budget (a "billion laughs" document stays cheap to reject).

Two parsers produce the events: libyaml's C parser where PyYAML was built with it (about
8× faster on a large sweep), else PyYAML's pure-Python one. Composition and every check
above run in Python on the events of either, so positions and messages do not depend on
the parser. A document the C parser refuses is parsed again in pure Python, whose error
message is the one reported (libyaml words its errors differently). Set
HPCML_PURE_YAML=1, or pass `pure=True`, to use only the pure-Python parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml: the pure-Python parser alone
    CParser = None

#: Set to 1 to parse with PyYAML's pure-Python parser even where libyaml is present.
PURE_ENV = "HPCML_PURE_YAML"

from hpcml.errors import Diagnostic

MAX_BYTES = 1024 * 1024
MAX_ALIASES = 100
#: Values after alias expansion: about what a 1 MiB file can hold without aliases, so only
#: alias expansion (a "billion laughs") can reach it.
MAX_NODES = 250_000
MAX_DEPTH = 64

_STR_TAG = "tag:yaml.org,2002:str"


@dataclass
class YNode:
    """A YAML value with its position. `value` is a scalar, a list of YNode, or a dict
    of str → YNode (in file order); `key_pos` holds where each mapping key was written."""

    value: Any
    line: int
    col: int
    node: Node | None = field(default=None, repr=False)  # the composed node, for scalar positions
    key_pos: dict[str, tuple[int, int]] = field(default_factory=dict)


class _PureNeeded(Exception):
    """Raised on the C path where only the pure-Python parser gives the reference result."""


class _Composing(Composer, SafeConstructor, Resolver):
    """Composes nodes from parser events (either parser's), recording tags and counting
    aliases on the way; constructs scalars as SafeLoader does."""

    def _start(self, file: str) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.file = file
        self.diagnostics: list[Diagnostic] = []
        self.aliases = 0
        self.expanded = 0
        self.blown = False
        self.sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            self.aliases += 1
            if self.aliases == MAX_ALIASES + 1:
                self._error(mark, f"too many YAML aliases (more than {MAX_ALIASES})")
            target = self.anchors.get(event.anchor)
            if target is not None and not self.blown:
                # Count what the alias will expand to, so the error points at the alias that
                # blows the budget rather than at some value deep inside the expansion.
                self.expanded += _size(target, self.sizes)
                if self.expanded > MAX_NODES:
                    self.blown = True
                    self._error(mark, f"alias *{event.anchor} expands the document beyond {MAX_NODES} values (alias bomb?)")
        elif isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            self._error(mark, f"YAML tags are not allowed (found {tag!r}); write plain values")
        if isinstance(event, ScalarEvent) and event.style == "":
            event.style = None  # libyaml marks a plain scalar '', the pure parser None
            if event.start_mark.index == event.end_mark.index:
                # An empty value (`key:`): libyaml places it at the next token, the pure
                # parser right after the ':'. Only the pure parser's place is reported.
                raise _PureNeeded
        return super().compose_node(parent, index)

    def _error(self, mark: Any, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, mark.line + 1, mark.column + 1, message))


class _PureLoader(Reader, Scanner, Parser, _Composing):
    def __init__(self, stream: str, file: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        self._start(file)


if CParser is not None:

    class _CLoader(_Composing, CParser):  # type: ignore[misc,valid-type]
        # _Composing first: its Python composer (with the checks) wins over CParser's C one,
        # and CParser supplies the events.
        def __init__(self, stream: str, file: str) -> None:
            CParser.__init__(self, stream)
            self._start(file)



def _size(node: Node, memo: dict[int, int]) -> int:
    """Number of values `node` expands to, aliases included (memoised, so a bomb stays cheap)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once here; the walker's depth limit catches it
    if isinstance(node, SequenceNode):
        total = 1 + sum(_size(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        total = 1 + sum(_size(k, memo) + _size(v, memo) for k, v in node.value)
    else:
        total = 1
    memo[id(node)] = total
    return total


class _Walker:
    """Turns a composed node graph into YNode trees, expanding aliases under a budget."""

    def __init__(self, loader: _Composing, file: str) -> None:
        self.loader = loader
        self.file = file
        self.diagnostics: list[Diagnostic] = []
        self.count = 0
        self.exhausted = False

    def error(self, node: Node, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, node.start_mark.line + 1, node.start_mark.column + 1, message))

    def walk(self, node: Node, depth: int = 0) -> YNode | None:
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            if not self.exhausted:
                what = f"more than {MAX_NODES} values" if self.count > MAX_NODES else f"deeper than {MAX_DEPTH} levels"
                self.error(node, f"document expands to {what} (alias bomb or runaway nesting?)")
                self.exhausted = True
            return None
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if isinstance(node, ScalarNode):
            return YNode(self.loader.construct_object(node), line, col, node)
        if isinstance(node, SequenceNode):
            items = [self.walk(child, depth + 1) for child in node.value]
            return YNode([i for i in items if i is not None], line, col, node)
        assert isinstance(node, MappingNode)
        return self._mapping(node, depth, line, col)

    def _mapping(self, node: MappingNode, depth: int, line: int, col: int) -> YNode:
        out = YNode({}, line, col, node)
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key is None:
                continue
            if key in out.value:
                first = out.key_pos[key]
                self.error(key_node, f"duplicate key {key!r} (first defined at line {first[0]}, column {first[1]})")
                continue
            child = self.walk(value_node, depth + 1)
            if child is not None:
                out.value[key] = child
                out.key_pos[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out

    def _key(self, key_node: Node) -> str | None:
        if key_node.tag == "tag:yaml.org,2002:merge":
            self.error(key_node, "YAML merge keys (<<) are not supported; repeat the keys or use 'defaults'")
            return None
        # YAML 1.1 reads a plain `on:` (also yes/no/off) as a boolean; as a key it can only
        # mean the word (`notify: {on: [...]}`), so it is read as written.
        if isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:bool" and not key_node.style:
            return str(key_node.value)
        if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, ScalarNode) else type(key_node).__name__
            self.error(key_node, f"keys must be strings, found {shown!r}; quote the key")
            return None
        return str(key_node.value)


def parse(text: str, file: str, *, pure: bool | None = None) -> tuple[YNode | None, list[Diagnostic]]:
    """Parse one YAML document into a positioned tree.

    Returns (tree, diagnostics); the tree is None when the YAML itself is unusable.
    An empty document gives (None, [one diagnostic]). `pure` forces (True) or forbids
    (False) the pure-Python parser; None uses libyaml unless HPCML_PURE_YAML=1.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None, [Diagnostic(file, 1, 1, f"file is larger than {MAX_BYTES // 1024} KiB; a workflow file should be small")]
    if pure is None:
        pure = os.environ.get(PURE_ENV, "") not in ("", "0")
    if not pure and CParser is not None:
        loader: _Composing = _CLoader(text, file)
        try:
            root = loader.get_single_node()
        except (yaml.YAMLError, RecursionError, _PureNeeded):
            # The pure parser words the message users see, and its positions are the reference.
            return _compose(_PureLoader(text, file), file)
        finally:
            loader.dispose()
        return _finish(loader, root, file)
    return _compose(_PureLoader(text, file), file)


def _compose(loader: _Composing, file: str) -> tuple[YNode | None, list[Diagnostic]]:
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (err.context, err.problem) if p)
        return None, [Diagnostic(file, line, col, f"invalid YAML: {problem}")]
    except yaml.YAMLError as err:
        return None, [Diagnostic(file, 1, 1, f"invalid YAML: {err}")]
    except RecursionError:
        return None, [Diagnostic(file, 1, 1, "invalid YAML: nested deeper than Python can read")]
    finally:
        loader.dispose()
    return _finish(loader, root, file)


def _finish(loader: _Composing, root: Node | None, file: str) -> tuple[YNode | None, list[Diagnostic]]:
    if loader.diagnostics:
        return None, loader.diagnostics
    if root is None:
        return None, [Diagnostic(file, 1, 1, "the file is empty; a workflow needs at least 'hpcml: 1', 'name' and 'steps'")]
    walker = _Walker(loader, file)
    tree = walker.walk(root)
    # A tree cut short by the budget would only produce confusing follow-up errors.
    return (None if walker.exhausted else tree), walker.diagnostics
