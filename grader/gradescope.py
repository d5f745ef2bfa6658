"""A Gradescope autograder for one homework: the bundle, and what runs inside it.

``write_bundle`` writes the zip that an instructor uploads to Gradescope. At its root::

    setup.sh          run once by Gradescope, as root, to build the image: bubblewrap (if the
                      image lets it be installed), Python 3.11+, a virtual environment in
                      /autograder/venv with torch==2.13.0 first, then requirements.txt
    run_autograder    run for each submission: ``python -m grader.gradescope /autograder``
    requirements.txt  the engine's dependencies pinned to the versions of the instructor's
                      environment (the whole tree, each ``name==version``)
    autograder.json   the homework and the visibility of its results
    course.toml       the course's rules and limits with this homework only (no roster)
    grader/, assignments/nncourse/, solutions/<hw>/checks/
                      the engine, the course kit and the homework's hidden checks, run from
                      /autograder/source (no reference notebook, no other homework)

``run`` grades ``/autograder/submission/*.ipynb`` with ``grading.grade_submission`` (the same
task a local pool or a Dask worker runs), applies the course's late rule to the submission time
Gradescope gives in ``submission_metadata.json`` (``created_at``), and writes
``/autograder/results/results.json`` in Gradescope's documented format: a top-level ``score``
(the final score in points, after the late rule), ``output`` (the notebook's status, its cell
errors and the late rule, in words) and one test per check: its docstring's first line as
``name``, ``score``, ``max_score``, our feedback message as ``output``, and ``visibility``. The
students read what our feedback shows, nothing more: never a check's code or its inputs beyond
its message. The same course gives the same bundle, byte for byte.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from grader import kit_text
from grader.config import Course, load_course
from grader.errors import ConfigError, GraderError
from grader.records import GradeRow, Outcome

VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's values
CONFIG = "autograder.json"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # PyTorch's CPU-only builds
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_EXECUTABLE = ("setup.sh", "run_autograder")


class BundleError(GraderError):
    """The bundle cannot be built as asked (unknown homework, no checks, existing output)."""


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
PYTHONPATH="$SOURCE:$SOURCE/assignments" "$VENV/bin/python" -m grader.gradescope --check "$ROOT"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission (grader gradescope): it grades
# $ROOT/submission/*.ipynb and writes $ROOT/results/results.json.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source"
export PYTHONPATH="$ROOT/source:$ROOT/source/assignments"
exec "$PYTHON" -m grader.gradescope "$ROOT"
"""


def bundle_files(course: Course, assignment: str, visibility: str = "after_due_date",
                 torch_index: str = TORCH_INDEX) -> dict[str, bytes]:
    """Every file of the bundle for ``assignment``, by path in the zip, sorted."""
    from grader.check import describe
    from grader.kit import ENGINE, _tree

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
    config = {"assignment": assignment, "visibility": visibility}
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
    files.update({f"grader/{k}": v for k, v in _tree(ENGINE, (".py", ".ini", ".j2")).items()})
    files.update({f"assignments/nncourse/{k}": v for k, v in _tree(kit, (".py", ".pt")).items()})
    files.update({f"solutions/{assignment}/checks/{k}": v for k, v in _tree(checks).items()})
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


# -- inside Gradescope -------------------------------------------------------------------------


def submission_time(root: Path, tz: dt.tzinfo) -> tuple[dt.datetime | None, str]:
    """The submission time from Gradescope's ``submission_metadata.json`` (``created_at``),
    or None and why it is unknown."""
    path = root / "submission_metadata.json"
    try:
        created = json.loads(path.read_text(encoding="utf-8"))["created_at"]
        moment = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"no readable created_at in {path.name} ({type(exc).__name__}: {exc})"
    if moment.tzinfo is None:
        return None, f"created_at in {path.name} has no time zone: {created!r}"
    return moment.astimezone(tz), ""


def _submission_folder(root: Path, notebook: str) -> Path:
    """Where the notebook lies: the submission folder itself, or (a repository or an archive
    submitted) the shallowest folder below it holding a notebook of the expected name."""
    top = root / "submission"
    if not top.is_dir() or any(p.suffix == ".ipynb" for p in top.iterdir()):
        return top
    found = sorted((p for p in top.rglob(notebook) if ".ipynb_checkpoints" not in p.parts),
                   key=lambda p: (len(p.parts), str(p)))
    return found[0].parent if found else top


def results(row: GradeRow, course: Course, summaries: Mapping[str, str],
            visibility: str) -> dict[str, Any]:
    """Gradescope's results.json for one graded submission."""
    from grader.export import display_status
    from grader.pages import STATUS_WORDS, cap_words, cell_errors

    tests = [{"name": summaries.get(c.name) or c.name, "number": str(number),
              "score": c.earned, "max_score": c.points,
              "output": "" if c.outcome is Outcome.PASSED else c.message,
              "visibility": visibility}
             for number, c in enumerate(row.check_results, start=1)]
    earned = sum(c.earned for c in row.check_results)
    if row.final is None:
        score = 0.0  # the time is unknown: no final score until the instructor sets one
    elif row.final == row.raw:
        score = earned
    else:
        score = round(row.final * row.possible / 100, 4)
    status = display_status(row).value
    title = course.assignment(row.assignment).title
    lines = [f"{title} ({row.assignment}): {row.earned:g} of {row.possible:g} points from the "
             f"checks ({row.raw:.2f} %), final score {score:g} points.", "",
             f"Notebook: {status}. {STATUS_WORDS.get(status, '')}"
             + ("" if status == "ok" else f" ({row.detail})")]
    errors = cell_errors(row)
    if errors:
        lines += ["", "Cells that raised an error or were interrupted:",
                  *(f"  {e}" for e in errors)]
    lines += ["", "Late rule: " + cap_words(row, course.late_policy), "",
              "The hidden checks test your functions on inputs drawn anew for each grading "
              "run; each check below says what it expected."]
    return {"score": score, "execution_time": round(row.seconds), "output": "\n".join(lines),
            "visibility": visibility, "stdout_visibility": "hidden", "tests": tests}


def _failure(visibility: str) -> dict[str, Any]:
    return {"score": 0.0, "output": "The autograder could not grade this submission. This is "
                                    "not your fault: your instructor sees why and will grade "
                                    "it again.", "visibility": visibility,
            "stdout_visibility": "hidden", "tests": []}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _bundle_config(root: Path) -> tuple[Course, str, str]:
    source = root / "source"
    try:
        config = json.loads((source / CONFIG).read_text(encoding="utf-8"))
        assignment, visibility = str(config["assignment"]), str(config["visibility"])
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{source / CONFIG}: not a bundle's settings: {exc}") from None
    course = load_course(source / "course.toml")
    course.assignment(assignment)
    return course, assignment, visibility


def run(root: Path, seed: int | None = None) -> tuple[dict[str, Any], GradeRow]:
    """Grade the submission under ``root`` (Gradescope's /autograder) and write
    ``root/results/results.json``; return what was written and the row."""
    from grader.check import describe
    from grader.discover import discover
    from grader.grading import grade_submission, new_seed
    from grader.sandbox import runs_kernels_as_nobody, use_sandbox

    course, assignment, visibility = _bundle_config(root)
    notebook = course.assignment(assignment).notebook
    submitted_at, time_problem = submission_time(root, course.timezone)
    seed = new_seed() if seed is None else seed
    sandboxed, sandbox = use_sandbox(course.limits)
    if not sandboxed and runs_kernels_as_nobody():
        # no sandbox here: the kernel runs as nobody, and the hidden checks are root's alone
        (root / "source").chmod(0o700)
    print(f"grading {root / 'submission'} for {assignment} with seed {seed}; {sandbox}; "
          f"engine at {Path(__file__).resolve().parent}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
        # the nbgrader layout that discover reads: <root>/<student>/<assignment>/
        folder = Path(tmp) / "student" / assignment
        folder.mkdir(parents=True)
        source = _submission_folder(root, notebook)
        if source.is_dir():
            for item in sorted(source.iterdir()):
                if item.is_symlink():
                    os.symlink(os.readlink(item), folder / item.name)  # discover refuses it
                elif item.is_file():
                    shutil.copyfile(item, folder / item.name)
        if submitted_at is not None:
            (folder / "timestamp.txt").write_text(submitted_at.isoformat())
        (sub,) = discover(Path(tmp), {assignment: notebook}, course.timezone)
        if time_problem:
            sub = dataclasses.replace(sub, time_problem=time_problem)
        row = grade_submission(sub, course, seed)
    summaries = {info.name: info.summary for info in describe(course.hidden_checks(assignment))}
    data = results(row, course, summaries, visibility)
    _write_json(root / "results" / "results.json", data)
    print(f"{row.status.value}: {row.detail}; raw {row.raw:.2f} %, final "
          f"{'-' if row.final is None else f'{row.final:.2f} %'}, score {data['score']:g} of "
          f"{row.possible:g}", flush=True)
    return data, row


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grader.gradescope [--check] ROOT``: run_autograder's entry point. Exit 0
    graded, 1 the grader failed on the submission, 2 the bundle is broken (results.json then
    says so, with score 0). ``--check`` only loads the bundle and its checks (setup.sh)."""
    from grader.check import describe

    args = list(sys.argv[1:] if argv is None else argv)
    check_only = "--check" in args
    args = [a for a in args if a != "--check"]
    root = Path(args[0] if args else "/autograder")
    visibility = "visible"
    try:
        course, assignment, visibility = _bundle_config(root)
        if check_only:
            infos = describe(course.hidden_checks(assignment))
            print(f"bundle of {assignment}: {len(infos)} checks load", flush=True)
            return 0
        _, row = run(root)
    except GraderError as exc:
        print(f"grader error: {exc}", flush=True)
        if not check_only:
            _write_json(root / "results" / "results.json", _failure(visibility))
        return exc.exit_code
    return 1 if row.status.value == "grader_error" else 0


if __name__ == "__main__":
    sys.exit(main())
