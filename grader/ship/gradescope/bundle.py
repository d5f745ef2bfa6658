"""The Gradescope autograder bundle of one homework: the zip an instructor uploads.

``write_bundle`` writes it. At its root::

    setup.sh          run once by Gradescope, as root, to build the image: bubblewrap (if the
                      image lets it be installed), Python 3.11+, a virtual environment in
                      /autograder/venv with torch==2.13.0 first, then requirements.txt
    run_autograder    run for each submission: ``python -m grader.ship.gradescope /autograder``
    requirements.txt  the engine's dependencies pinned to the versions of the instructor's
                      environment (the whole tree, each ``name==version``)
    autograder.json   the homework and the visibility of its results
    course.toml       the course's rules and limits with this homework only (no roster)
    grader/, assignments/nncourse/, solutions/<hw>/checks/
                      the engine, the course kit and the homework's hidden checks, run from
                      /autograder/source (no reference notebook, no other homework)

The same course gives the same bundle, byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from grader.course.config import Course
from grader.course.questions import load_questions
from grader.errors import BundleError, ConfigError
from grader.ship import kit_text
from grader.ship.kit import ENGINE, plain_files

VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's values
CONFIG = "autograder.json"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # PyTorch's CPU-only builds
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_EXECUTABLE = ("setup.sh", "run_autograder")


@dataclass(frozen=True)
class Bundle:
    """What ``write_bundle`` wrote."""

    path: Path
    assignment: str
    files: int
    checks: int


# -- the bundle --------------------------------------------------------------------------------


def pinned_requirements() -> list[str]:
    """``name==version`` for every package the installed engine needs, its dependencies'
    dependencies included (extras and markers as this environment evaluates them), sorted.
    A local version label (``2.13.0+cpu``) is left out: setup.sh chooses the build."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    owners = metadata.packages_distributions().get("grader")
    if not owners:
        raise BundleError("the engine is not installed as a package (run `make install`): "
                          "its dependencies cannot be pinned")
    engine = canonicalize_name(owners[0])
    pins: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(owners[0], frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BundleError(f"{name} is required by the engine but not installed here; "
                              f"run `make install` first") from None
        if canonicalize_name(name) != engine:
            pins[canonicalize_name(name)] = dist.version.split("+")[0]
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in extras | {""})
            if wanted:
                pending.append((req.name, frozenset(req.extras)))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (grader gradescope).
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$ROOT/source"
VENV="$ROOT/venv"
TORCH_INDEX="${{TORCH_INDEX:-{torch_index}}}"

# The kernel sandbox. Where the image cannot run it, the course's limits.sandbox decides:
# "required" refuses to grade (said in every result), "auto" grades with resource limits only.
apt-get update -qq || true
apt-get install -y -qq bubblewrap util-linux \\
    || echo "setup.sh: bubblewrap could not be installed; see limits.sandbox in course.toml"

# Python {python} (the version the bundle was made with), else any 3.11 or newer.
PYTHON=""
for candidate in python{python} python3; do
    if command -v "$candidate" >/dev/null 2>&1 \\
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PYTHON="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$PYTHON" ]; then
    apt-get install -y -qq python{python} python{python}-venv
    PYTHON="$(command -v python{python})"
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {{
        apt-get install -y -qq "$(basename "$PYTHON")-venv" && "$PYTHON" -m venv "$VENV"; }}
fi

# torch==2.13.0 first, from the CPU-only builds: a plain requirement would pull a CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0 --index-url "$TORCH_INDEX"
"$VENV/bin/python" -m pip install -q -r "$SOURCE/requirements.txt"

# The engine runs from $SOURCE; it must import, and the hidden checks must load.
cd "$SOURCE"
PYTHONPATH="$SOURCE:$SOURCE/assignments" "$VENV/bin/python" -m grader.ship.gradescope \\
    --check "$ROOT"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission (grader gradescope): it grades
# $ROOT/submission/*.ipynb and writes $ROOT/results/results.json.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source"
export PYTHONPATH="$ROOT/source:$ROOT/source/assignments"
exec "$PYTHON" -m grader.ship.gradescope "$ROOT"
"""


def bundle_files(course: Course, assignment: str, visibility: str = "after_due_date",
                 torch_index: str = TORCH_INDEX) -> dict[str, bytes]:
    """Every file of the bundle for ``assignment``, by path in the zip, sorted."""
    from grader.pipeline.checking import describe

    try:
        course.assignment(assignment)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    if visibility not in VISIBILITY:
        raise BundleError(f"visibility must be one of {', '.join(VISIBILITY)}, got "
                          f"{visibility!r}")
    checks = course.hidden_checks(assignment)
    describe(checks)  # checks without points or that fail to load stop here
    kit = course.root / "assignments" / "nncourse"
    if not (kit / "__init__.py").is_file():
        raise BundleError(f"{kit}: the course kit nncourse is missing")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    config: dict[str, object] = {"assignment": assignment, "visibility": visibility}
    try:
        questions = load_questions(course, assignment)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    if questions:  # named in results.json: marked by people, not in Gradescope's score
        config["written"] = [{"id": q.id, "title": q.title, "points": q.points}
                             for q in questions]
    files = {
        "setup.sh": SETUP_SH.format(torch_index=torch_index, python=python).encode(),
        "run_autograder": RUN_AUTOGRADER.encode(),
        "requirements.txt": "".join(f"{pin}\n" for pin in pinned_requirements()).encode(),
        CONFIG: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        "course.toml": kit_text.course_toml(
            course, [assignment], header="for the Gradescope autograder of "
                                         f"{assignment} (written by grader gradescope)",
            students=False).encode(),
    }
    files.update({f"grader/{k}": v
                  for k, v in plain_files(ENGINE, (".py", ".ini", ".j2")).items()})
    files.update({f"assignments/nncourse/{k}": v
                  for k, v in plain_files(kit, (".py", ".pt")).items()})
    files.update({f"solutions/{assignment}/checks/{k}": v for k, v in plain_files(checks).items()})
    return dict(sorted(files.items()))


def _zip(files: Mapping[str, bytes]) -> bytes:
    # files at the root of the archive (Gradescope looks for setup.sh there); fixed times
    # and modes, so the same course gives the same bytes
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (0o100755 if name in _EXECUTABLE else 0o100644) << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def write_bundle(course: Course, assignment: str, out: Path, visibility: str = "after_due_date",
                 replace: bool = False, torch_index: str = TORCH_INDEX) -> Bundle:
    """Write the Gradescope autograder zip for ``assignment`` at ``out`` (an existing file only
    with ``replace``)."""
    out = Path(out)
    if out.suffix != ".zip":
        raise BundleError(f"{out}: the bundle is a zip file; name it something.zip")
    if out.exists() and (not replace or not out.is_file()):
        raise BundleError(f"{out}: exists; pass --force to replace it")
    files = bundle_files(course, assignment, visibility, torch_index)
    packed = _zip(files)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(packed)
    os.replace(partial, out)
    checks = sum(1 for name in files if name.startswith(f"solutions/{assignment}/checks/")
                 and name.endswith(".py"))
    return Bundle(out, assignment, len(files), checks)
