"""What runs inside Gradescope for each submission (``run_autograder`` calls
``python -m grader.ship.gradescope ROOT``).

``run`` grades ``/autograder/submission/*.ipynb`` with ``grading.grade_submission`` (the same
task a local pool or a Dask worker runs), applies the course's late rule to the submission time
Gradescope gives in ``submission_metadata.json`` (``created_at``), and writes
``/autograder/results/results.json`` in Gradescope's documented format: a top-level ``score``
(the final score in points, after the late rule), ``output`` (the notebook's status, its cell
errors and the late rule, in words) and one test per check: its title as ``name``,
``score``, ``max_score``, our feedback message as ``output``, and ``visibility``. All of it is
rendered from the row's view (``grader.output.view``), as the feedback pages are: the students
read what our feedback shows, nothing more, never a check's code or its inputs beyond its
message.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.course.config import Course, load_course
from grader.errors import BundleError, GraderError
from grader.output.view import RowView, view
from grader.records import GradeRow, Status
from grader.ship.gradescope.bundle import CONFIG


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


def written_note(written: Sequence[Mapping[str, Any]]) -> str:
    """The sentence that says the written questions are not in Gradescope's score."""
    if not written:
        return ""
    names = ", ".join(f"{w['title']} ({float(w['points']):g} pt)" for w in written)
    total = sum(float(w["points"]) for w in written)
    return (f"Written questions: {names}. A person marks them after the deadline; their "
            f"{total:g} points are not in this score, and your instructor adds them to your "
            f"grade.")


def results(v: RowView, visibility: str,
            written: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Gradescope's results.json for one graded submission, from its view. ``written``: the
    homework's written questions (id, title, points), which this score leaves out."""
    tests = [{"name": f"{c.task}: {c.title}" if c.task else c.title, "number": str(number),
              "score": c.earned, "max_score": c.points, "output": c.message,
              "visibility": visibility}
             for number, c in enumerate(v.checks, start=1)]
    earned = sum(c.earned for c in v.checks)
    if v.final is None:
        score = 0.0  # the time is unknown: no final score until the instructor sets one
    elif v.final == v.raw:
        score = earned
    else:
        score = round(v.final * v.possible / 100, 4)
    lines = [f"{v.title} ({v.assignment}): {v.earned:g} of {v.possible:g} points from the "
             f"checks ({v.raw:.2f} %), final score {score:g} points.", "",
             f"Notebook: {v.status.value}. {v.status_words}"
             + ("" if v.ran_cleanly else f" ({v.detail})")]
    if v.cell_errors:
        lines += ["", "Cells that raised an error or were interrupted:",
                  *(f"  {e}" for e in v.cell_errors)]
    if written:
        lines += ["", written_note(written)]
    lines += ["", "Late rule: " + v.cap_words, "",
              "The hidden checks test your functions on inputs drawn anew for each grading "
              "run; each check below says what it expected."]
    return {"score": score, "execution_time": round(v.seconds), "output": "\n".join(lines),
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
    course, assignment, visibility, _ = _bundle_settings(root)
    return course, assignment, visibility


def _bundle_settings(root: Path) -> tuple[Course, str, str, list[dict[str, Any]]]:
    source = root / "source"
    try:
        config = json.loads((source / CONFIG).read_text(encoding="utf-8"))
        assignment, visibility = str(config["assignment"]), str(config["visibility"])
        written = [dict(w) for w in config.get("written", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{source / CONFIG}: not a bundle's settings: {exc}") from None
    course = load_course(source / "course.toml")
    course.assignment(assignment)
    return course, assignment, visibility, written


def run(root: Path, seed: int | None = None) -> tuple[dict[str, Any], GradeRow]:
    """Grade the submission under ``root`` (Gradescope's /autograder) and write
    ``root/results/results.json``; return what was written and the row."""
    from grader.kernel.sandbox import runs_kernels_as_nobody, use_sandbox
    from grader.pipeline.discover import discover
    from grader.pipeline.grading import grade_submission, new_seed

    course, assignment, visibility, written = _bundle_settings(root)
    notebook = course.assignment(assignment).notebook
    submitted_at, time_problem = submission_time(root, course.timezone)
    seed = new_seed() if seed is None else seed
    sandboxed, sandbox = use_sandbox(course.limits)
    if not sandboxed and runs_kernels_as_nobody():
        # no sandbox here: the kernel runs as nobody, and the hidden checks are root's alone
        (root / "source").chmod(0o700)
    print(f"grading {root / 'submission'} for {assignment} with seed {seed}; {sandbox}; "
          f"engine at {Path(__file__).resolve().parents[2]}", flush=True)
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
    data = results(view(row, course), visibility, written)
    _write_json(root / "results" / "results.json", data)
    print(f"{row.status.value}: {row.detail}; raw {row.raw:.2f} %, final "
          f"{'-' if row.final is None else f'{row.final:.2f} %'}, score {data['score']:g} of "
          f"{row.possible:g}", flush=True)
    return data, row


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grader.ship.gradescope [--check] ROOT``: run_autograder's entry point. Exit 0
    graded, 1 the grader failed on the submission, 2 the bundle is broken (results.json then
    says so, with score 0). ``--check`` only loads the bundle and its checks (setup.sh)."""
    from grader.pipeline.checking import describe

    parser = argparse.ArgumentParser(prog="python -m grader.ship.gradescope",
                                     description="Grade a Gradescope submission.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("/autograder"),
                        help="Gradescope's autograder folder (default: /autograder)")
    parser.add_argument("--check", action="store_true",
                        help="only load the bundle and its checks (setup.sh runs this)")
    args = parser.parse_args(argv)
    visibility = "visible"
    try:
        course, assignment, visibility = _bundle_config(args.root)
        if args.check:
            infos = describe(course.hidden_checks(assignment))
            print(f"bundle of {assignment}: {len(infos)} checks load", flush=True)
            return 0
        _, row = run(args.root)
    except GraderError as exc:
        print(f"grader error: {exc}", flush=True)
        if not args.check:
            _write_json(args.root / "results" / "results.json", _failure(visibility))
        return exc.exit_code
    return 1 if row.status is Status.GRADER_ERROR else 0
