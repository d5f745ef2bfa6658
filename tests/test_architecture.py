"""The engine's packages and who may import whom, as docs/architecture.md draws them.

Imports follow the data, downward only: a package imports only the packages its row of the
page's table names (any module of them, at any depth of its code, in a function too), never
one beside or above it. No import cycle; the kernel's end imports nothing outside its package;
the parts that only read records (the course, the output, the report) never reach a module that
imports torch, pytest or a Jupyter kernel; ``grader report`` and ``grader export`` run without
importing either (checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from conftest import REPO
from rows import make_row

from grader.pipeline.store import open_gradebook

GRADER = REPO / "grader"

BASE = {"grader.records", "grader.errors", "grader.text"}


def _table() -> dict[str, set[str]]:
    """docs/architecture.md's "Who may import whom": each row's package -> what it may import
    (``base``: the three modules below everything)."""
    rows: dict[str, set[str]] = {}
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Who may import whom", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`grader"):
            names = {c.strip().strip("`") for c in cells[1].split(",") if c.strip()}
            rows[cells[0].strip("`")] = (names - {"base"}) | (BASE if "base" in names else set())
    return rows


MAY_IMPORT = _table()
# what a module that must stay light may not reach
HEAVY_LIBRARIES = ("torch", "pytest", "nbclient", "jupyter_client", "zmq")
LIGHT = ("grader.course", "grader.output", "grader.tools.report", "grader.tools.report_page",
         "grader.tools.similarity", "grader.pipeline.discover", "grader.pipeline.score",
         "grader.pipeline.store", "grader.records", "grader.errors", "grader.text", "grader.lms")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> list[str]:
    """Every module name ``path`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in GRADER.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    """Every grader module -> the grader modules it imports."""
    modules = _modules()
    return {name: {t for t in _imports(path, name) if t in modules and t != name}
            for name, path in modules.items()}


def _unit(module: str) -> str:
    """The row of MAY_IMPORT a module belongs to: its longest listed prefix."""
    return max((u for u in MAY_IMPORT if module == u or module.startswith(u + ".")), key=len)


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_every_module_belongs_to_a_row_of_the_table():
    assert len(MAY_IMPORT) >= 10, "docs/architecture.md's table was not found"
    assert {_unit(m) for m in _modules()} == set(MAY_IMPORT)


def test_the_drawing_names_every_module():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = text.split("```", 2)[1]
    missing = [p.name for p in GRADER.rglob("*.py")
               if p.name != "__init__.py" and p.stem not in drawing and p.name not in drawing]
    assert missing == [], f"docs/architecture.md's drawing leaves out {missing}"


def test_each_package_imports_only_the_packages_below_it():
    wrong = sorted(f"{module} imports {target}" for module, targets in _graph().items()
                   for target in targets
                   if _unit(target) != _unit(module)
                   and _unit(target) not in MAY_IMPORT[_unit(module)])
    assert wrong == []


def test_the_table_has_no_cycle():
    TopologicalSorter({unit: below - {unit} for unit, below in MAY_IMPORT.items()}).prepare()


def test_the_engine_has_no_import_cycle():
    try:
        tuple(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_kernels_end_imports_only_its_own_package():
    graph = _graph()
    for name in graph:
        if name.startswith("grader.kernel.bridge."):
            assert all(t.startswith("grader.kernel.bridge") for t in graph[name]), name


def test_the_parts_that_read_records_never_reach_a_kernel_pytest_or_torch():
    modules = _modules()
    graph = _graph()
    heavy = {name for name, path in modules.items()
             if any(i.split(".")[0] in HEAVY_LIBRARIES for i in _imports(path, name))}
    assert {"grader.pipeline.checking", "grader.kernel.session"} <= heavy  # the scan sees them
    for name in modules:
        if name.startswith(LIGHT):
            assert not ({name} | _reach(graph, name)) & heavy, (name, _reach(graph, name) & heavy)


def test_report_and_export_import_neither_pytest_nor_torch(tmp_path):
    book = tmp_path / "gb.sqlite"
    with open_gradebook(book) as gradebook:
        gradebook.put(make_row())
    script = (
        "import sys\n"
        "from grader.cli import main\n"
        "for args in sys.argv[1:]:\n"
        "    try:\n"
        "        main(args.split('|'))\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_LIBRARIES!r}))\n")
    common = f"--course|{REPO / 'course.toml'}|--gradebook|{book}"
    done = subprocess.run(
        [sys.executable, "-c", script, f"report|{common}|--out|{tmp_path / 'report.html'}",
         f"export|{common}|--csv|{tmp_path / 'g.csv'}|--long|{tmp_path / 'l.csv'}"
         f"|--feedback|{tmp_path / 'fb'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "report.html").is_file() and (tmp_path / "fb" / "alice" / "hw1.md").is_file()


def test_a_deferred_module_is_imported_at_its_first_use_and_not_before(tmp_path):
    # grader._defer: what keeps jsonschema's IRI grammar (1.2 s) out of every grading process
    (tmp_path / "slow_thing.py").write_text(
        "import os\nos.environ['SLOW_THING_RAN'] = '1'\n"
        "def double(n):\n    return 2 * n\n")
    script = (
        "import os, sys, grader\n"
        "grader._defer('slow_thing', ('double',))\n"
        "from slow_thing import double\n"
        "import slow_thing\n"
        "assert not hasattr(slow_thing, '__wrapped__')\n"  # introspection is not a use
        "assert 'SLOW_THING_RAN' not in os.environ\n"
        "assert double(21) == 42 and os.environ['SLOW_THING_RAN'] == '1'\n"
        "assert sys.modules['slow_thing'].__file__.endswith('slow_thing.py')\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(tmp_path), str(REPO)])}, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
