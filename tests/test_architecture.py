"""The engine's imports follow the data (docs/architecture.md): no cycles; records, errors and
the wire codec import nothing of the grader; the kernel's end imports nothing outside its
package; and the stages that only read records (config, score, store, export, report) never
reach the modules that need a kernel, pytest or torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from conftest import REPO

GRADER = REPO / "grader"

# modules that import torch, pytest or a Jupyter kernel (directly)
HEAVY = {"grader.check", "grader.checks", "grader.protocol", "grader.kernel", "grader.grading",
         "grader.execute", "grader.judge", "grader.pipeline", "grader.pool"}
LIGHT = ("grader.config", "grader.rules", "grader.score", "grader.store", "grader.export",
         "grader.records", "grader.errors", "grader.discover")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every grader module -> the grader modules it imports (at any depth of its code)."""
    modules = {_module_name(p): p for p in GRADER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_engine_has_no_import_cycle():
    try:
        tuple(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_records_errors_and_the_wire_import_nothing_of_the_grader():
    graph = _graph()
    for name in ("grader.records", "grader.errors", "grader.bridge.wire"):
        assert graph[name] == set(), (name, graph[name])


def test_the_kernels_end_imports_only_its_own_package():
    graph = _graph()
    for name in ("grader.bridge.kernel", "grader.bridge.zygote"):
        assert graph[name] <= {"grader.bridge", "grader.bridge.wire"}, (name, graph[name])


def test_the_stages_that_read_records_never_reach_a_kernel_pytest_or_torch():
    graph = _graph()
    for name in LIGHT:
        assert not (_reach(graph, name) & HEAVY), (name, _reach(graph, name) & HEAVY)


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
