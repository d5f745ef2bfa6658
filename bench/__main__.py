"""``python -m bench``: grading throughput against nbgrader, otter and a bare nbclient loop, and
the per-homework overhead of grading over bare execution.

Exit codes: 0 every run graded every submission right; 1 a run failed or graded wrong (the
figures of the others are still printed); 2 a usage error (an unknown or missing tool).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from bench import homework, overhead, tools
from bench.measure import Measured, run_measured

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class Run:
    """One tool's run over the N submissions."""

    tool: str
    label: str
    sandboxed: bool
    jobs: int
    n: int
    measured: Measured
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.measured.returncode == 0 and not self.problems

    def per_submission(self) -> tuple[float, float]:
        """Wall and CPU seconds per submission."""
        return self.measured.wall_s / self.n, self.measured.cpu_s / self.n


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "nbclient", "ipykernel", "nbgrader", "otter-grader"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _choose(names: str | None) -> list[tools.Tool]:
    known = tools.tools()
    if names is None:
        chosen = [t for t in known.values() if tools.installed(t)]
    else:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise click.UsageError(f"unknown tool(s) {', '.join(unknown)}; known: "
                                   f"{', '.join(known)}")
        chosen = [known[n] for n in known if n in wanted]
        missing = [t.name for t in chosen if not tools.installed(t)]
        if missing:
            raise click.UsageError(f"{', '.join(missing)} not installed: "
                                   f".venv/bin/pip install -e '.[bench]'")
    if any(t.sandboxed for t in chosen):
        from grader.kernel.sandbox import probe

        found = probe()
        if not found.available:
            if names is not None:
                raise click.UsageError(f"the sandboxed runs need the sandbox: {found.reason}")
            out.print(f"note: sandboxed runs skipped: {found.reason}")
            chosen = [t for t in chosen if not t.sandboxed]
    return chosen


def _throughput(chosen: list[tools.Tool], n: int, work: Path) -> list[Run]:
    submissions = work / "submissions"
    homework.write_submissions(submissions, n)
    runs = []
    for tool in chosen:
        plan = tools.prepare(tool, work / tool.name, submissions, n)
        out.print(f"grading {n} submissions: {tool.label} ...")
        measured = run_measured(plan.commands, cwd=plan.cwd, env=tools.environment(),
                                log=work / f"{tool.name}.log")
        problems = plan.verify()
        if measured.returncode != 0:
            problems.insert(0, f"exit status {measured.returncode}; see "
                               f"{work / (tool.name + '.log')}")
        run = Run(tool.name, tool.label, tool.sandboxed, tool.jobs, n, measured, problems)
        wall, cpu = run.per_submission()
        out.print(f"  {measured.wall_s:.1f} s wall, {measured.cpu_s:.1f} s CPU "
                  f"({wall:.2f} / {cpu:.2f} s per submission); load {measured.load_start:.1f}"
                  f" -> {measured.load_end:.1f}" + ("" if run.ok else f"; FAILED: "
                                                    f"{'; '.join(problems)[:300]}"))
        runs.append(run)
    return runs


def _ratio(value: float, base: float | None) -> str:
    return "-" if not base else f"{value / base:.2f}x"


def _throughput_table(runs: list[Run]) -> Table:
    base = next((r for r in runs if r.tool == "nbgrader" and r.ok), None)
    base_wall, base_cpu = base.per_submission() if base else (None, None)
    n = runs[0].n if runs else 0
    table = Table(title=f"Grading {n} submissions of a trivial torch homework "
                        f"(seconds per submission)")
    for column in ("tool", "sandbox", "wall", "CPU", "wall vs nbgrader", "CPU vs nbgrader",
                   "load start -> end", "ok"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        wall, cpu = run.per_submission()
        m = run.measured
        table.add_row(run.label, "bubblewrap" if run.sandboxed else "none", f"{wall:.2f}",
                      f"{cpu:.2f}", _ratio(wall, base_wall), _ratio(cpu, base_cpu),
                      f"{m.load_start:.1f} -> {m.load_end:.1f}", "yes" if run.ok else "NO")
    return table


def _homework_table(timings: list[overhead.Timing], fork_server_s: float) -> Table:
    table = Table(title=f"Grading each reference notebook vs executing it bare (median s; the "
                        f"fork server started once before, in {fork_server_s:.1f} s)")
    for column in ("homework", "bare", "graded", "graded / bare", "of which: notebook",
                   "checks", "rest", "repeats", "load start -> end"):
        table.add_column(column, no_wrap=True)
    for t in timings:
        table.add_row(t.assignment, f"{t.bare_s:.2f}", f"{t.graded_s:.2f}", f"{t.ratio:.2f}",
                      f"{t.execution_s:.2f}", f"{t.checks_s:.2f}", f"{t.rest_s:.2f}",
                      str(t.repeats), f"{t.load_start:.1f} -> {t.load_end:.1f}")
    return table


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "--n", "n", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Submissions to grade with each tool.")
@click.option("--tools", "tool_names", default=None, metavar="IDS",
              help=f"Comma-separated tools to run, of: {', '.join(tools.tools())}. "
                   f"Default: all that are installed (nbgrader and otter: pip install -e "
                   f"'.[bench]').")
@click.option("--homeworks", default=None, metavar="IDS",
              help="Comma-separated homeworks whose grading overhead to measure, or 'none'. "
                   "Default: every homework of the course.")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Runs of each reference notebook, bare and graded (medians reported).")
@click.option("--course", "course_path", type=click.Path(path_type=Path, dir_okay=False),
              default=tools.REPO / "course.toml", show_default=True,
              help="The course whose homeworks are measured.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Also write every figure to this JSON file.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the courses, submissions and logs go (kept). Default: a temporary "
                   "folder, removed at the end.")
def main(n: int, tool_names: str | None, homeworks: str | None, repeats: int,
         course_path: Path, json_path: Path | None, workdir: Path | None) -> None:
    """Grade the same N generated submissions with this grader (--jobs = the cores, and 1;
    sandboxed, and with the sandbox off), a bare nbclient loop, and nbgrader's autograde and
    otter's run when installed; print wall and CPU time per submission (every child process
    included) and the ratios against nbgrader. Then, per homework, time grading its reference
    notebook against executing it bare.

    Example: python -m bench --n 20 --json out/bench.json   (what `make bench` runs)
    """
    chosen = _choose(tool_names)
    if homeworks is None or homeworks == "none":
        wanted: list[str] = []
        if homeworks is None:
            from grader.course.config import load_course

            wanted = [a.id for a in load_course(course_path).assignments]
    else:
        wanted = [h.strip() for h in homeworks.split(",") if h.strip()]
    machine = {"cores": tools.cores(), "cpu": _cpu_model(), "python": platform.python_version(),
               "versions": _versions(),
               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    out.print(f"{machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
              + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    out.print("Only this grader sandboxes its kernels (bubblewrap); nbgrader, otter and the bare "
              "loop run plain kernels. 'sandbox off' is this grader like for like.")
    work = workdir or Path(tempfile.mkdtemp(prefix="grader-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        runs = _throughput(chosen, n, work) if chosen else []
        if runs:
            out.print(_throughput_table(runs))
        timings, fork_server_s, note, failures = [], 0.0, "", []
        if wanted:
            fork_server_s, note = overhead.start_fork_server(course_path)
            out.print(f"homework overhead: {note}; {repeats} run(s) each")
            for assignment in wanted:
                try:
                    t = overhead.measure(course_path, assignment, repeats)
                    timings.append(t)
                    out.print(f"  {assignment}: bare {t.bare_s:.2f} s, graded {t.graded_s:.2f} s"
                              f" ({t.ratio:.2f}x); load {t.load_start:.1f} -> {t.load_end:.1f}")
                except overhead.HomeworkFailed as exc:
                    failures.append(str(exc))
                    out.print(f"FAILED: {exc}")
            if timings:
                out.print(_homework_table(timings, fork_server_s))
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({
            "machine": machine, "n": n,
            "throughput": [{**{k: v for k, v in asdict(r).items() if k != "measured"},
                            **asdict(r.measured), "cpu_s": r.measured.cpu_s, "ok": r.ok,
                            "wall_per_submission_s": r.per_submission()[0],
                            "cpu_per_submission_s": r.per_submission()[1]} for r in runs],
            "fork_server_s": fork_server_s, "sandbox": note,
            "homeworks": [{**asdict(t), "ratio": t.ratio, "rest_s": t.rest_s}
                          for t in timings],
            "homework_failures": failures}, indent=2) + "\n")
        out.print(f"figures written to {json_path}")
    if failures or not all(r.ok for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
