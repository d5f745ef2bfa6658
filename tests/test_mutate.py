"""Tests for grader/tools/mutate.py: mutants of solution regions only, every operator class, stable
ids, edits that leave the rest of the cell byte-identical, nothing unparseable or unchanged."""

from __future__ import annotations

import ast

import nbformat
import pytest
from conftest import REPO

from grader.errors import MutateError
from grader.tools.mutate import OPERATORS, cell_mutants, notebook_mutants, regions, sample

CELL = '''\
import math

LIMIT = 3 * 4  # outside the region: never mutated


def area(w: int, h: int, scale: float = 2.5) -> float:
    """Area, scaled; not a mutation site either."""
    ### BEGIN SOLUTION
    total = 0
    for i in range(w):
        total += h * scale
    if total <= 100 and not math.isnan(total):
        total = max(total - 1, 0.5)
    return pow(total, 1) + (w / h)
    ### END SOLUTION


def outside(a, b):
    return a < b + 1
'''


def _region_lines(source: str) -> set[int]:
    return {n for r in regions(source) for n in range(r.first, r.last + 1)}


def test_every_operator_class_finds_a_site_in_a_small_cell():
    found = {m.operator for m in cell_mutants(CELL)}
    assert found == set(OPERATORS)


def test_ids_are_stable_and_do_not_depend_on_the_cell_number_or_other_cells():
    first = cell_mutants(CELL, cell=3)
    again = cell_mutants(CELL, cell=3)
    moved = cell_mutants("x = 1\n\n\n" + CELL, cell=7)  # another cell index, lines added above
    assert [m.id for m in first] == [m.id for m in again]
    assert [m.id for m in first] == [m.id for m in moved]
    assert len({m.id for m in first}) == len(first)
    assert all(m.id.startswith("area-") for m in first)


def test_only_lines_inside_regions_change_and_the_rest_is_byte_identical():
    inside = _region_lines(CELL)
    mutants = cell_mutants(CELL)
    assert len(mutants) > 20
    for m in mutants:
        before, after = CELL.splitlines(keepends=True), m.after.splitlines(keepends=True)
        head = next(i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b)
        tail = next(i for i, (a, b) in enumerate(zip(before[::-1], after[::-1], strict=False))
                    if a != b)
        changed = range(head + 1, len(before) - tail + 1)  # 1-based lines of the original
        assert set(changed) <= inside, m.summary
        assert m.after.startswith("".join(before[:head]))
        assert m.after.endswith("".join(before[len(before) - tail:]))
        assert m.before == CELL and m.line == head + 1


def test_each_mutant_compiles_and_differs():
    mutants = cell_mutants(CELL)
    assert len({m.after for m in mutants}) == len(mutants)
    for m in mutants:
        assert m.after != CELL
        compile(m.after, "<mutant>", "exec")


def test_the_edits_are_the_ones_the_operators_promise():
    changes = {(m.operator, m.old, m.new) for m in cell_mutants(CELL)}
    assert ("arith", "*", "/") in changes
    assert ("arith", "+=", "-=") in changes
    assert ("compare", "<=", "<") in changes
    assert ("compare", "and", "or") in changes
    assert ("compare", "not math.isnan(total)", "math.isnan(total)") in changes
    assert ("constant", "100", "101") in changes and ("constant", "0.5", "0.55") in changes
    assert ("drop", "total - 1", "total") in changes
    assert ("drop", "pow(total, 1) + (w / h)", "pow(total, 1)") in changes
    assert ("args", "total, 1", "1, total") in changes
    assert ("range", "w", "w - 1") in changes and ("range", "w", "1, w") in changes
    assert ("statement", "total = 0", "pass") in changes


def test_a_dropped_operand_keeps_its_parentheses_where_precedence_needs_them():
    source = "def f(a, b, c):\n    ### BEGIN SOLUTION\n    return (a + b) * c\n" \
             "    ### END SOLUTION\n"
    dropped = {m.new for m in cell_mutants(source) if m.operator == "drop"}
    assert "(a + b)" in dropped  # not "a + b" standing where "(a + b) * c" stood
    for m in cell_mutants(source):
        ast.parse(m.after)


def test_unparseable_and_unchanged_edits_are_skipped():
    source = ("def f(x):\n    ### BEGIN SOLUTION\n    @staticmethod\n    def g():\n"
              "        return 1\n    return max(x, x)\n    ### END SOLUTION\n")
    mutants = cell_mutants(source)
    # swapping max(x, x)'s arguments changes nothing; removing the decorated def leaves a
    # decorator on `pass`, which does not compile
    assert not [m for m in mutants if m.operator == "args"]
    assert not [m for m in mutants if m.operator == "statement" and m.old.startswith("def g")]
    assert [m for m in mutants if m.operator == "statement" and m.old.startswith("return max")]


def test_a_cell_without_regions_or_that_is_not_python_has_no_mutants():
    assert cell_mutants("x = 1 + 2\n") == []
    assert cell_mutants("%timeit f()\n### BEGIN SOLUTION\nx = 1 + 2\n### END SOLUTION\n") == []


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1\n",
    "x = 1\n### END SOLUTION\n",
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n",
])
def test_unbalanced_markers_are_an_error_naming_the_place(source):
    with pytest.raises(MutateError, match="hw9.ipynb, cell 4, line"):
        cell_mutants(source, 4, "hw9.ipynb, cell 4")


def test_sampling_is_reproducible_from_the_seed_and_in_notebook_order():
    nb = nbformat.read(REPO / "solutions" / "hw1" / "hw1.ipynb", as_version=4)
    mutants = notebook_mutants([(i, c.source) for i, c in enumerate(nb.cells)
                                if c.cell_type == "code"])
    assert len(mutants) >= 100 and len({m.id for m in mutants}) == len(mutants)
    one, same, other = sample(mutants, 40, 7), sample(mutants, 40, 7), sample(mutants, 40, 8)
    assert [m.id for m in one] == [m.id for m in same] != [m.id for m in other]
    assert len(one) == 40 and one == sorted(one, key=lambda m: (m.cell, m.line, m.id))
    assert len(sample(mutants, 10**6, 7)) == len(mutants)
    assert all(m.cell >= 0 and nb.cells[m.cell].source == m.before for m in one)


def test_the_diff_shows_the_one_changed_line():
    m = next(m for m in cell_mutants(CELL) if (m.operator, m.old) == ("statement", "total = 0"))
    diff = m.diff("area.ipynb").splitlines()
    assert [line for line in diff if line.startswith(("-", "+")) and not
            line.startswith(("---", "+++"))] == ["-    total = 0", "+    pass"]
    assert m.id in diff[1]
