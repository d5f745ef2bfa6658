"""Mutants of a reference notebook's solution regions, for ``grader audit``.

A mutant is the reference notebook with one small edit inside one ``### BEGIN SOLUTION`` /
``### END SOLUTION`` region: the kind of slip a student makes. Good hidden checks take points
from nearly every mutant; one that keeps every point shows what the checks do not look at.

Operator classes (``OPERATORS``), each applied at every site it fits inside a region:
``arith`` (``+ -``, ``* /``, ``// /``, ``** *`` ... swapped), ``compare`` (``< <=``, ``< >``,
``== !=``, ``is``/``is not``, ``in``/``not in``, ``and``/``or`` swapped; ``not`` dropped),
``constant`` (an int +1 and -1, a float x1.1, ``True``/``False`` swapped), ``drop`` (a binary
``+ - * /`` replaced by one operand: a term or a factor dropped), ``statement`` (a statement
replaced by ``pass``), ``args`` (two neighbouring positional arguments of a call swapped),
``range`` (a ``range`` bound moved by one).

A mutant is a textual edit of the cell: the edited span is replaced, everything else in the
cell stays byte-identical, so its diff is as small as the slip. Edits that do not compile, or
that leave the cell as it was, are not mutants. A mutant's id names the top-level function it
sits in and hashes where it sits in that function and what it changes, never a seed or a cell
number, so a reviewed list of equivalent mutants stays valid when cells are added elsewhere.

Why not mutmut or cosmic-ray: both mutate the Python files of a package and run a test command
per mutant (mutmut 3 through its trampolined copy of the source tree, cosmic-ray through a
session over module paths and parso trees). Neither can be aimed at marked line ranges inside
notebook cells, nor grade a mutant through the grader's own path, and neither has the issue's
``x1.1``, dropped-operand, swapped-argument or ``range`` operators; their operators would have
to be re-hosted anyway, so the small operator set is written here over ``ast``.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import io
import random
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from grader.course.notebook import solution_regions
from grader.errors import MutateError

OPERATORS = ("arith", "compare", "constant", "drop", "statement", "args", "range")

_ARITH: dict[type[ast.operator], tuple[str, str]] = {
    ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
    ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"),
    ast.MatMult: ("@", "*"), ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"),
    ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"),
}
_COMPARE: dict[type[ast.cmpop], tuple[str, tuple[str, ...]]] = {
    ast.Lt: ("<", ("<=", ">")), ast.LtE: ("<=", ("<", ">=")), ast.Gt: (">", (">=", "<")),
    ast.GtE: (">=", (">", "<=")), ast.Eq: ("==", ("!=",)), ast.NotEq: ("!=", ("==",)),
    ast.Is: ("is", ("is not",)), ast.IsNot: ("is not", ("is",)),
    ast.In: ("in", ("not in",)), ast.NotIn: ("not in", ("in",)),
}


@dataclass(frozen=True)
class Region:
    """Lines ``first``..``last`` (1-based, inclusive) of code cell ``cell`` lie inside a
    solution region (the marker lines themselves excluded)."""

    cell: int
    first: int
    last: int


@dataclass(frozen=True)
class Mutant:
    """One edit of one code cell. ``cell`` indexes the notebook's cells (all kinds), ``line`` is
    1-based within the cell; ``before``/``after`` are the whole cell's source."""

    id: str
    operator: str
    cell: int
    line: int
    function: str
    old: str
    new: str
    before: str
    after: str

    @property
    def summary(self) -> str:
        """One line: what changed, and where."""
        where = f"in {self.function}" if self.function else "at top level"
        return (f"{self.operator}: {_one_line(self.old)!r} -> {_one_line(self.new)!r} {where} "
                f"(cell {self.cell}, line {self.line})")

    def diff(self, name: str = "notebook") -> str:
        """The unified diff of the cell, three lines of context."""
        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            f"{name} cell {self.cell} (reference)", f"{name} cell {self.cell} (mutant {self.id})"))


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def regions(source: str, cell: int = 0, where: str = "cell") -> list[Region]:
    """The solution regions of one code cell's ``source`` that hold a line."""
    try:
        found = solution_regions(source, where)
    except ValueError as exc:
        raise MutateError(str(exc)) from None
    return [Region(cell, r.begin + 1, r.end - 1) for r in found if r.end - r.begin > 1]


@dataclass(frozen=True)
class _Edit:
    start: int  # character offsets into the cell's source
    end: int
    text: str


class _Cell:
    """A parsed code cell: character offsets for ast positions, tokens, enclosing functions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tree = ast.parse(source)
        self.lines = source.splitlines(keepends=True) or [""]
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.tokens = [(self.offset_chars(t.start[0], t.start[1]), t.string)
                       for t in tokenize.generate_tokens(io.StringIO(source).readline)
                       if t.type in (tokenize.OP, tokenize.NAME)]
        self.top: dict[int, ast.AST] = {}  # id(node) -> the top-level def it sits in
        for stmt in self.tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for node in ast.walk(stmt):
                    self.top[id(node)] = stmt

    def offset_chars(self, lineno: int, col: int) -> int:
        return self.starts[lineno - 1] + col

    def offset(self, lineno: int, col_bytes: int) -> int:
        # ast columns count UTF-8 bytes, tokenize columns count characters
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col_bytes].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                self.offset(node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.source[start:end]

    def token_between(self, start: int, end: int, words: str) -> _Edit | None:
        """The span of the token sequence ``words`` (e.g. "not in") between two offsets."""
        want = words.split()
        inside = [(pos, s) for pos, s in self.tokens if start <= pos < end]
        for i in range(len(inside) - len(want) + 1):
            if [s for _, s in inside[i:i + len(want)]] == want:
                first, last = inside[i], inside[i + len(want) - 1]
                return _Edit(first[0], last[0] + len(last[1]), "")
        return None


_BINARY_PRECEDENCE: dict[type[ast.operator], int] = {
    ast.BitOr: 6, ast.BitXor: 7, ast.BitAnd: 8, ast.LShift: 9, ast.RShift: 9, ast.Add: 10,
    ast.Sub: 10, ast.Mult: 11, ast.Div: 11, ast.FloorDiv: 11, ast.Mod: 11, ast.MatMult: 11,
    ast.Pow: 13,
}


def _precedence(node: ast.AST) -> int:
    """Python's operator precedence of an expression node (higher binds tighter)."""
    if isinstance(node, ast.BinOp):
        return _BINARY_PRECEDENCE[type(node.op)]
    if isinstance(node, ast.UnaryOp):
        return 4 if isinstance(node.op, ast.Not) else 12
    if isinstance(node, ast.BoolOp):
        return 3 if isinstance(node.op, ast.And) else 2
    order = {ast.Lambda: 0, ast.IfExp: 1, ast.NamedExpr: 0, ast.Compare: 5, ast.Await: 14}
    return order.get(type(node), 16)


def _wrapped(node: ast.expr, text: str, replaced: ast.expr) -> str:
    """``text`` (the source of ``node``, which takes the place of ``replaced``), in
    parentheses where it binds less tightly than what it replaces."""
    return f"({text})" if _precedence(node) < _precedence(replaced) else text


def _shifted(cell: _Cell, node: ast.expr, by: int) -> str:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return str(node.value + by)
    text = cell.text(node)
    if _precedence(node) <= _BINARY_PRECEDENCE[ast.Add]:
        text = f"({text})"
    return f"{text} {'+' if by > 0 else '-'} {abs(by)}"


def _sites(cell: _Cell, node: ast.AST) -> Iterator[tuple[str, list[_Edit]]]:
    """Every (operator class, edits) that applies to ``node`` itself."""
    if isinstance(node, ast.BinOp | ast.AugAssign):
        left, right = (node.left, node.right) if isinstance(node, ast.BinOp) \
            else (node.target, node.value)
        symbol, swap = _ARITH.get(type(node.op), ("", ""))
        if symbol:
            suffix = "=" if isinstance(node, ast.AugAssign) else ""
            found = cell.token_between(cell.span(left)[1], cell.span(right)[0], symbol + suffix)
            if found is not None:
                yield "arith", [_Edit(found.start, found.end, swap + suffix)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult
                                                      | ast.Div | ast.FloorDiv):
            start, end = cell.span(node)
            yield "drop", [_Edit(start, end, _wrapped(left, cell.text(left), node))]
            if isinstance(node.op, ast.Add | ast.Mult):
                yield "drop", [_Edit(start, end, _wrapped(right, cell.text(right), node))]
    elif isinstance(node, ast.Compare):
        previous: ast.expr = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            symbol, swaps = _COMPARE[type(op)]
            found = cell.token_between(cell.span(previous)[1], cell.span(right)[0], symbol)
            if found is not None:
                for swap in swaps:
                    yield "compare", [_Edit(found.start, found.end, swap)]
            previous = right
    elif isinstance(node, ast.BoolOp):
        word, swap = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        found = cell.token_between(cell.span(node.values[0])[1], cell.span(node.values[1])[0],
                                   word)
        if found is not None:
            yield "compare", [_Edit(found.start, found.end, swap)]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        start, end = cell.span(node)
        yield "compare", [_Edit(start, end, _wrapped(node.operand, cell.text(node.operand),
                                                     node))]
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        start, end = cell.span(node)
        value = node.value
        if type(value) is bool:
            yield "constant", [_Edit(start, end, str(not value))]
        elif type(value) is int:
            yield "constant", [_Edit(start, end, str(value + 1))]
            yield "constant", [_Edit(start, end, str(value - 1))]
        elif isinstance(value, float):
            yield "constant", [_Edit(start, end, repr(float(f"{value * 1.1:.12g}"))
                                     if value else "1.0")]
    elif isinstance(node, ast.Call):
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args):
            for a, b in zip(positional, positional[1:], strict=False):
                (sa, ea), (sb, eb) = cell.span(a), cell.span(b)
                yield "args", [_Edit(sa, ea, cell.text(b)), _Edit(sb, eb, cell.text(a))]
        if (isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords
                and 1 <= len(node.args) <= 3 and len(positional) == len(node.args)):
            if len(node.args) == 1:
                stop = node.args[0]
                sa, ea = cell.span(stop)
                yield "range", [_Edit(sa, ea, _shifted(cell, stop, -1))]
                yield "range", [_Edit(sa, ea, _shifted(cell, stop, +1))]
                yield "range", [_Edit(sa, ea, "1, " + cell.text(stop))]
            else:
                start_node, stop = node.args[0], node.args[1]
                sa, ea = cell.span(start_node)
                yield "range", [_Edit(sa, ea, _shifted(cell, start_node, +1))]
                sa, ea = cell.span(stop)
                yield "range", [_Edit(sa, ea, _shifted(cell, stop, -1))]
                yield "range", [_Edit(sa, ea, _shifted(cell, stop, +1))]
    if isinstance(node, ast.stmt) and not isinstance(node, ast.Pass | ast.Global
                                                     | ast.Nonlocal):
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str)
        if not docstring:
            start, end = cell.span(node)
            yield "statement", [_Edit(start, end, "pass")]


def _inside(node: ast.AST, region: Region) -> bool:
    first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    return first is not None and last is not None and region.first <= first and \
        last <= region.last


def _skipped(tree: ast.AST) -> set[int]:
    # f-string internals carry unreliable positions; never mutate inside them
    return {id(inner) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
            for inner in ast.walk(node)}


def _apply(source: str, edits: Sequence[_Edit]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        source = source[:edit.start] + edit.text + source[edit.end:]
    return source


def _compiles(source: str) -> bool:
    try:
        compile(source, "<cell>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def cell_mutants(source: str, cell: int = 0, where: str = "cell") -> list[Mutant]:
    """Every mutant of the solution regions of one code cell, in source order. A cell that does
    not parse as Python (an IPython magic) has none."""
    found_regions = regions(source, cell, where)
    if not found_regions:
        return []
    try:
        parsed = _Cell(source)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return []
    skipped = _skipped(parsed.tree)
    mutants: list[Mutant] = []
    seen_sources = {source}
    ids: set[str] = set()
    nodes = sorted((n for n in ast.walk(parsed.tree)
                    if id(n) not in skipped and any(_inside(n, r) for r in found_regions)),
                   key=lambda n: (n.lineno, n.col_offset,  # type: ignore[attr-defined]
                                  -n.end_lineno, -n.end_col_offset))  # type: ignore[attr-defined]
    for node in nodes:
        for operator, edits in _sites(parsed, node):
            after = _apply(source, edits)
            if after in seen_sources or not _compiles(after):
                continue
            seen_sources.add(after)
            first = min(edits, key=lambda e: e.start)
            last = max(edits, key=lambda e: e.end)
            old, new = source[first.start:last.end], _apply(source[:last.end], edits)[first.start:]
            top = parsed.top.get(id(node))
            function = getattr(top, "name", "")
            anchor = top.lineno if top is not None else node.lineno  # type: ignore[attr-defined]
            line = source.count("\n", 0, first.start) + 1
            column = first.start - parsed.starts[line - 1]
            key = f"{function}|{line - anchor}|{column}|{operator}|{old}|{new}"
            digest = hashlib.sha256(key.encode()).hexdigest()[:8]
            mutant_id = f"{function or 'top'}-{digest}"
            while mutant_id in ids:  # the same edit text twice at one place: keep ids unique
                mutant_id += "x"
            ids.add(mutant_id)
            mutants.append(Mutant(mutant_id, operator, cell, line, function, old, new,
                                  source, after))
    return mutants


def notebook_mutants(cells: Sequence[tuple[int, str]], where: str = "notebook") -> list[Mutant]:
    """Every mutant of a notebook, given its code cells as (cell index, source) pairs."""
    found: list[Mutant] = []
    for index, source in cells:
        found += cell_mutants(source, index, f"{where}, cell {index}")
    ids = [m.id for m in found]
    if len(set(ids)) != len(ids):  # one function defined in two cells: number the repeats
        seen: dict[str, int] = {}
        renamed = []
        for m in found:
            seen[m.id] = seen.get(m.id, 0) + 1
            renamed.append(m if seen[m.id] == 1 else
                           Mutant(**{**m.__dict__, "id": f"{m.id}-{seen[m.id]}"}))
        found = renamed
    return found


def sample(mutants: Sequence[Mutant], count: int, seed: int) -> list[Mutant]:
    """``count`` of ``mutants`` drawn with ``random.Random(seed)`` (all when there are fewer),
    in notebook order."""
    chosen = list(mutants) if count >= len(mutants) else \
        random.Random(seed).sample(list(mutants), count)
    return sorted(chosen, key=lambda m: (m.cell, m.line, m.id))
