"""The course's grader: it runs students' notebooks in a sandboxed kernel, grades them with
hidden pytest checks, applies the course's late and pass rules, and keeps a gradebook.

The public surface: the ``grader`` command (``grader.cli``), the check authors' library
(``grader.checks``), the records every stage passes on (``grader.records``) and the errors
(``grader.errors``). docs/architecture.md draws the packages and who imports whom."""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any


def _defer(module: str, names: tuple[str, ...]) -> None:
    """Put a stand-in for ``module`` in ``sys.modules`` that imports the real one only when
    something of it is used (``names`` are the functions importers take from it at their own
    import time). Nothing changes for a caller but when the cost is paid."""
    if module in sys.modules or importlib.util.find_spec(module) is None:
        return
    stand_in = types.ModuleType(module)

    def real() -> types.ModuleType:
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]
        return importlib.import_module(module)

    def deferred(name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: getattr(real(), name)(*args, **kwargs)

    def anything_else(name: str) -> Any:
        if name.startswith("__"):  # introspection (a scan of sys.modules, say) is not a use
            raise AttributeError(name)
        return getattr(real(), name)

    for name in names:
        setattr(stand_in, name, deferred(name))
    stand_in.__getattr__ = anything_else  # type: ignore[method-assign]
    sys.modules[module] = stand_in


# nbformat imports jsonschema, which imports rfc3987_syntax when it is installed (jupyter_server
# installs it) for its "iri" format checks; that module builds a grammar at import: 1.2 s of CPU
# in every grading process, for checks nbformat never runs.
_defer("rfc3987_syntax", ("is_valid_syntax",))

# At exit the interpreter collects garbage before it tears its modules down; with torch loaded
# that traversal is most of a second of a grading process's exit (the command line's, the
# workers' parent's). Everything alive then is frozen first: the collection skips it (Python
# never promised finalizers at exit).
atexit.register(gc.freeze)
