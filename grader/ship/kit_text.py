"""The generated files of the student kit: README.md, Makefile, pyproject.toml, course.toml.

Each is a pure function of the course settings and the released homework ids, with no date of
building in it, so that building a kit twice gives the same bytes. Deadlines are computed with
``grader.course.rules.late_tiers``, the function that grading uses, so the README never disagrees
with the grader.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from importlib import metadata

from grader.course.config import Course
from grader.course.rules import LatePolicy, Tier, late_tiers

KIT_DISTRIBUTION = "nncourse-kit"
TORCH = "torch==2.13.0"  # the Makefile installs it first (see the Makefile's comment)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _day(day: dt.date) -> str:
    # Fixed English names: strftime's %a and %b follow the locale of whoever builds the kit.
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def _offset(moment: dt.datetime) -> str:
    minutes = int((moment.utcoffset() or dt.timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _last_minute(tier: Tier) -> dt.datetime:
    # Tier.deadline is the first instant that is too late; the README names the last minute
    # that still counts, as the syllabus does ("before 11:59" includes the minute 11:59).
    return (tier.deadline.astimezone(dt.UTC) - dt.timedelta(minutes=1)).astimezone(
        tier.deadline.tzinfo)


def deadline_rows(course: Course, released: Sequence[str]) -> list[list[str]]:
    """One row per released homework: id, title, lecture day, then the last minute of the
    100 %, 75 % and 50 % tiers in the course's zone ("-" for an empty tier)."""
    tiers = {a: late_tiers(course.assignment(a).lecture_day, course.last_lecture_day,
                           course.timezone, course.deadline_time) for a in released}
    offsets = {_offset(t.deadline) for ts in tiers.values() for t in ts}
    rows = []
    for a in released:
        info = course.assignment(a)
        by_cap = {t.cap: _last_minute(t) for t in tiers[a]}
        cells = []
        for cap in (100.0, 75.0, 50.0):
            moment = by_cap.get(cap)
            if moment is None:
                cells.append("-")
                continue
            text = f"{_day(moment.date())}, {moment:%H:%M}"
            cells.append(text if len(offsets) == 1 else f"{text} ({_offset(moment)})")
        title = info.title + ("" if info.required else " (optional)")
        rows.append([a, title, _day(info.lecture_day), *cells])
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def readme(course: Course, released: Sequence[str]) -> str:
    """The student README: set-up, checking, deadlines, handing in, the pass rule."""
    first = released[0]
    notebook = course.assignment(first).notebook
    homework = _table(["homework", "title", "notebook to fill in"],
                      [[a, course.assignment(a).title,
                        f"`assignments/{a}/{course.assignment(a).notebook}`"] for a in released])
    deadlines = _table(["homework", "title", "lecture", "100 % until", "75 % until", "50 % until"],
                       deadline_rows(course, released))
    example_tier = late_tiers(course.assignment(first).lecture_day, course.last_lecture_day,
                              course.timezone, course.deadline_time)[0]
    zone = f"{course.timezone.key} ({_offset(example_tier.deadline)})"
    hhmm = course.deadline_time.strftime("%H:%M")
    if course.late_policy is LatePolicy.CAP:
        late = ("the percentage is a cap: a late homework scores the smaller of what its checks "
                "earn and the cap (95 % of the checks, submitted in the 75 % window, gives 75 %)")
    else:
        late = ("the percentage scales the score: a late homework scores what its checks earn "
                "times the percentage (95 % of the checks in the 75 % window gives 71.25 %)")
    required = [a.id for a in course.assignments if a.required]
    optional = [a.id for a in course.assignments if not a.required]
    optional_text = (f" {', '.join(optional)} {'is' if len(optional) == 1 else 'are'} optional "
                     f"and {'does' if len(optional) == 1 else 'do'} not count."
                     if optional else "")
    limits = course.limits
    check_one = f"make check HW={first}"
    text = f"""# {course.name}: student kit

This folder is what you need to do the homework on your own machine and to check it the way
the grader runs it: the homework released so far, their public checks, the course kit
`nncourse` (the digits data split, the course models, pretrained weights) and the grader's
engine.

{homework}

## Set up

You need Python 3.11 or newer. On Linux or macOS with `make`, in this folder, run:

```
make install
```

It creates a virtual environment in `.venv`: PyTorch 2.13.0 first, then the engine and
`nncourse` (`pip install -e .`), which takes a few minutes the first time. Without `make`, the
same by hand, on Linux or macOS:

```
python3 -m venv .venv
.venv/bin/python -m pip install {TORCH}
.venv/bin/python -m pip install -e .
```

and on Windows (PowerShell or cmd, with Python from python.org; no `make` needed):

```
py -3.11 -m venv .venv
.venv\\Scripts\\python -m pip install {TORCH}
.venv\\Scripts\\python -m pip install -e .
```

On Windows you may instead work in WSL (Ubuntu inside Windows): there, follow the Linux steps;
it runs your notebook exactly as on Linux.

PyTorch comes first, pinned, so that pip keeps that version; if you prefer another build of
PyTorch 2.13.0 (a CPU-only one is smaller), install it into `.venv` before the last command, or
pass it to make: `make install TORCH="..."`.

Work on the notebooks in any Jupyter front end that uses the Python of `.venv` as its kernel
(for example `.venv/bin/python -m pip install jupyterlab`, then `.venv/bin/jupyter lab`; on
Windows `.venv\\Scripts\\...`). Write your code where a cell says `# YOUR CODE HERE`, and keep
the function names and signatures.

## Check your work

```
{check_one}    # one homework
{"make check":<{len(check_one)}}    # every homework in this folder
```

`make check` runs `.venv/bin/grader check assignments/{first}/{notebook}`: your notebook is
executed from the top in a fresh kernel, as the grader will execute it, and then the public
checks call your functions. It prints one line per check, grouped by the function it checks,
`PASS`, or `FAIL` with what was expected, and then `N passed, N failed`. The command works from
any folder and on a notebook wherever it lies (`~/Downloads/{notebook}` too: the notebook names
its homework in its metadata):

```
.venv/bin/grader check assignments/{first}/{notebook}                 # Linux, macOS
.venv\\Scripts\\python -m grader check assignments\\{first}\\{notebook}   # Windows
```

`grader check` exits 0 when every check passed, 1 when a check failed, 2 when the notebook
could not be read (not valid JSON, not a notebook) or is not a homework of this kit. `make
check` exits 0 when all passed, and otherwise 2 (make's own code for any failed command), with
the command's code in its last line: `Error 1` or `Error 2`; a script or an editor's task that
needs the difference runs `grader check` itself.

What your run is not: the public checks are small cases you could verify by hand. The grader
runs hidden checks that test the same functions on other inputs, drawn anew for each grading
run, and measures the models you build (accuracy, size, sparsity) itself. Passing every public
check is a good sign, not a grade, and a function that only returns the public checks' answers
earns nothing. The grader also runs your notebook in a sandbox, on Linux, with at most
{limits.memory_mb} MB of memory. On Linux your run is the grader's (with the sandbox where
bubblewrap is installed); on macOS and Windows your notebook runs in a plain Jupyter kernel of
your own Python: the same cells, checks and time limits, no sandbox, and only the resource
limits your system allows (macOS: CPU time and file size; Windows: none), so a notebook that
needs more memory than the grader allows can pass here and fail there. A plain kernel starts
with its own imports (PyTorch), which costs a few seconds more per notebook than on Linux.

Written questions: some markdown cells ask for your own words about your results (they hold
`YOUR ANSWER HERE`). People mark them after the deadline with a rubric, and their points count
with the checks'; your final score waits until they are marked. `grader check` cannot mark
them: it lists each one and says whether the saved file answers it and holds the figure it
discusses. The grader reads your answer and that figure from the file you hand in, so save the
notebook after running it.

The grader stops a cell after {limits.cell_timeout_s:g} s and the whole notebook after
{limits.notebook_timeout_s:g} s; `grader check` uses the same limits. The notebooks run on one CPU
thread and need no GPU and no network.

## Deadlines

Times are in {zone}. "Until {hhmm}" includes the whole minute {hhmm}.

{deadlines}

Each column gives the last minute of a window: a homework handed in by then scores at most
that percentage, and after the last window it scores 0. {late[0].upper() + late[1:]}. A window
shown as "-" does not exist for that homework (one given on the last lecture day has no 50 %
window).

## Hand in

Hand in the notebook file itself, named as it is here (`{notebook}` for {first}): not a copy
with another name, not a link, not an archive, and not several notebooks for one homework.
Run it from the top in a fresh kernel (`make check` does that) before you hand it in: the
grader runs it the same way and grades what the functions return, not the outputs saved in
the file (except the figures your written answers discuss: save after the run). The time your
file is received is the time the late rule uses.

## Passing the course

You pass with at least {course.pass_rule.min_percent:g} % (after the late rule) on at least
{course.pass_rule.min_required} of the {len(required)} required homework
({', '.join(required)}).{optional_text}
"""
    return _rewrap(text)


def _rewrap(text: str) -> str:
    """Refill the prose paragraphs of ``text`` (the values put into them change line lengths);
    headings, tables and code blocks stay as they are."""
    blocks = text.strip("\n").split("\n\n")
    kept = []
    for block in blocks:
        if block.startswith(("#", "|", "```")):
            kept.append(block)
        else:
            # "50 %" stays on one line: the space before % is held by a placeholder
            words = " ".join(block.split()).replace(" %", "\0%")
            kept.append(textwrap.fill(words, width=96, break_on_hyphens=False,
                                      break_long_words=False).replace("\0", " "))
    return "\n\n".join(kept) + "\n"


def makefile(course: Course, released: Sequence[str]) -> str:
    """The kit's Makefile: ``make install``, ``make check`` and ``make check HW=hw1``."""
    notebooks = "\n".join(f"NOTEBOOK_{a} := assignments/{a}/{course.assignment(a).notebook}"
                          for a in released)
    return f"""# The student kit: `make install` once, then `make check` (or `make check HW=...`).
PYTHON   ?= python3
TORCH    ?= {TORCH}
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
HW       ?=
HOMEWORK := {' '.join(released)}
{notebooks}

.PHONY: install check

# PyTorch first, pinned: installed after the rest, a plain `torch` requirement could make pip
# choose another build (several gigabytes with CUDA).
$(STAMP): pyproject.toml
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/python -m pip install -q $(TORCH)
\t$(BIN)/python -m pip install -q -e .
\ttouch $(STAMP)

install: $(STAMP)  ## set up .venv (once)

# The recipe's status is the worst of the notebooks': 1 a check failed, 2 a notebook unreadable.
check: $(STAMP)  ## run your notebooks and the public checks (make check HW={released[0]})
\t@$(if $(filter-out $(HOMEWORK),$(HW)),echo "$(HW) is not in this kit: $(HOMEWORK)"; exit 2;) \\
\tstatus=0; for nb in $(foreach h,$(or $(HW),$(HOMEWORK)),$(NOTEBOOK_$(h))); do \\
\t\t$(BIN)/grader check "$$nb"; code=$$?; if [ $$code -gt $$status ]; then status=$$code; fi; \\
\tdone; exit $$status
"""


# What runs the kit's code without being imported by it: the kernel, and the exporter that
# torch.onnx calls (where a notebook imports onnx, homework 5).
NEEDED_BESIDES = {"ipykernel": "", "onnxscript": "onnx"}


def imported_modules(files: Mapping[str, bytes]) -> set[str]:
    """The top-level modules the kit's Python files and notebooks import (any depth of the
    code; a notebook's cell magics and shell lines skipped)."""
    found: set[str] = set()
    for name, data in files.items():
        if name.endswith(".py"):
            sources = [data.decode("utf-8")]
        elif name.endswith(".ipynb"):
            cells = json.loads(data).get("cells", [])
            sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                       for c in cells if c.get("cell_type") == "code"]
        else:
            continue
        for source in sources:
            code = "\n".join(line for line in source.splitlines()
                             if not line.lstrip().startswith(("%", "!")))
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def requirements(files: Mapping[str, bytes]) -> list[str]:
    """The engine's own pins (torch==2.13.0, tensorly, ...) of the packages the kit needs: those
    its files import, and what runs them without an import (``NEEDED_BESIDES``); nothing the
    instructor's tools alone need. Sorted."""
    distribution = metadata.packages_distributions()["grader"][0]
    modules = imported_modules(files)
    providers = metadata.packages_distributions()
    needed = {canonicalize(d) for m in modules for d in providers.get(m, ())}
    needed |= {name for name, when in NEEDED_BESIDES.items() if not when or when in modules}
    kept = []
    for text in metadata.requires(distribution) or []:
        if "extra ==" in text:
            continue
        if canonicalize(re.split(r"[\s<>=!~;\[]", text, maxsplit=1)[0]) in needed:
            kept.append(text)
    return sorted(kept)


def canonicalize(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject(packages: Sequence[str], needs: Sequence[str]) -> str:
    """The kit's pyproject.toml: installs the engine's ``packages`` (``grader`` and those of its
    subpackages the kit ships), ``nncourse``, and the ``needs`` (``requirements``)."""
    dependencies = "".join(f"    {json.dumps(r)},\n" for r in needs)
    listed = ", ".join(json.dumps(p) for p in [*packages, "nncourse"])
    return f"""# The student kit: the engine that `make check` runs and the course kit `nncourse`.
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{KIT_DISTRIBUTION}"
version = "1"
description = "Student kit: the homework's public checks and the engine that runs them"
requires-python = ">=3.11"
dependencies = [
{dependencies}]

[project.scripts]
grader = "grader.cli:main"

[tool.setuptools]
packages = [{listed}]

[tool.setuptools.package-dir]
grader = "grader"
nncourse = "assignments/nncourse"

[tool.setuptools.package-data]
nncourse = ["weights/*.pt", "digits.pt"]
"grader.pipeline" = ["*.ini"]
"""


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


def course_toml(course: Course, released: Sequence[str], *,
                header: str = "for `grader check` in the student kit (written by grader "
                              "release)", students: bool = True) -> str:
    """The kit's course.toml: the course's rules and limits and the released homework only; no
    roster, no extensions. For ``students``, a kernel sandbox the course requires becomes
    "auto": a student's laptop may have no bubblewrap, and there the student runs only their
    own code."""
    limits = {key: getattr(course.limits, key) for key in course.limits.__dataclass_fields__}
    if students and limits["sandbox"] == "required":
        limits["sandbox"] = "auto"
    course_table = {"name": course.name, "timezone": course.timezone.key,
                    "deadline_time": course.deadline_time.strftime("%H:%M"),
                    "late_policy": course.late_policy.value,
                    "last_lecture_day": course.last_lecture_day}
    pass_rule = {"min_percent": course.pass_rule.min_percent,
                 "min_required": course.pass_rule.min_required}
    out = [f"# Course settings {header}.", ""]
    for name, table in (("course", course_table), ("pass_rule", pass_rule), ("limits", limits)):
        out += [f"[{name}]", *(f"{k} = {_value(v)}" for k, v in table.items()), ""]
    for a in released:
        info = course.assignment(a)
        out += ["[[assignment]]", *(f"{k} = {_value(getattr(info, k))}" for k in
                                    ("id", "title", "lecture_day", "required", "notebook")), ""]
    return "\n".join(out)
