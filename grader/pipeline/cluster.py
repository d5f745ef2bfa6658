"""Grading on a Dask cluster: each submission is one task, the gradebook has one writer.

``grade_on_cluster`` is ``grader.pipeline.pool.grade_in_workers`` for more than one machine.
Each task is
``grading.grade_submission`` (execute the notebook, run its checks, score it) on a
``dask.distributed`` worker, which starts its own kernel fork server the first time it grades
and keeps it (until the worker process exits: Dask spawns its workers, so they end through
Python's own exit and ``grader.kernel.session``'s atexit stops the server). Rows come back to the
client as they finish and are stored there, one at a time. A worker that dies takes nothing
stored with it: the scheduler hands the submissions it held to another worker (up to the
scheduler's ``distributed.scheduler.allowed-failures``, 3 by default, before it gives up on a
task); a task that fails for any other reason is retried once and then becomes that
submission's ``grader_error`` row, never the end of the batch.

Every worker must see the course, the hidden checks and the submissions at the same paths as
the client (a shared file system), and run the same engine and torch: that is checked on each
worker before any task is sent, and a worker that falls short is named.

``address`` is a scheduler's address (``tcp://host:8786``) or ``local``: a ``LocalCluster`` of
worker processes on this machine, one thread each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import sys
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.course.config import Course
from grader.errors import ClusterError, GraderError
from grader.pipeline.grading import Listener, grade_submission, grader_error_row
from grader.records import GradeRow, Limits, Submission, Task

if TYPE_CHECKING:
    from distributed import Client, Future

LOCAL = "local"
RETRIES = 1  # a task that raised (not one whose worker died: the scheduler moves those)
CONNECT_TIMEOUT_S = 20.0  # reaching the scheduler
WORKERS_TIMEOUT_S = 120.0  # waiting for the first worker to join
IN_FLIGHT_PER_THREAD = 2  # tasks handed to the cluster at once, per worker thread


@functools.cache
def engine_fingerprint() -> str:
    """A hash of the engine's source files: two processes that agree grade alike."""
    digest = hashlib.sha256()
    engine = Path(__file__).resolve().parent
    for path in sorted(engine.rglob("*.py")):
        digest.update(path.relative_to(engine).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def worker_view(paths: Sequence[str], limits: Limits) -> dict[str, Any]:
    """What a worker sees: which of ``paths`` it lacks, its engine, torch and sandbox. Runs on
    each worker before grading (and on the client, to compare)."""
    import torch

    from grader.kernel.sandbox import use_sandbox

    try:
        _, sandbox = use_sandbox(limits)
    except GraderError as exc:
        sandbox = f"ERROR: {exc}"
    return {"missing": [p for p in paths if not os.path.exists(p)],
            "engine": engine_fingerprint(), "torch": torch.__version__,
            "python": sys.version.split()[0], "sandbox": sandbox, "host": os.uname().nodename}


def worker_problems(views: dict[str, dict[str, Any]], ours: dict[str, Any]) -> list[str]:
    """A sentence per worker that cannot grade as the client would (none: all can)."""
    problems = []
    for worker, view in sorted(views.items()):
        where = f"worker {worker} (on {view['host']})"
        if view["missing"]:
            shown = ", ".join(view["missing"][:3])
            more = f" and {len(view['missing']) - 3} more" if len(view["missing"]) > 3 else ""
            problems.append(f"{where} cannot see {shown}{more}: the course, its checks and the "
                            f"submissions must be at the same paths on every machine (a "
                            f"shared folder)")
        if view["engine"] != ours["engine"]:
            problems.append(f"{where} runs another version of the grader (engine "
                            f"{view['engine']}, here {ours['engine']}): install the same one")
        if view["torch"] != ours["torch"]:
            problems.append(f"{where} has torch {view['torch']}, here {ours['torch']}")
        if view["sandbox"].startswith("ERROR: "):
            problems.append(f"{where}: {view['sandbox'][len('ERROR: '):]}")
    return problems


def _grade(sub: Submission, course: Course, seed: int, engine: str) -> GradeRow:
    """One task, on a worker: grade one submission. A worker that joined after the check of
    ``check_workers`` and cannot grade as the client would fails the task (it is tried again,
    then becomes a grader_error row), so that nothing it lacks is charged to the student."""
    import torch

    wanted = [course.path, course.hidden_checks(sub.assignment)]
    missing = [str(p) for p in wanted + ([] if sub.problem else [sub.path]) if not p.exists()]
    if missing:
        raise RuntimeError(f"the worker on {os.uname().nodename} cannot see "
                           f"{', '.join(missing)}")
    if engine_fingerprint() != engine:
        raise RuntimeError(f"the worker on {os.uname().nodename} runs another version of the "
                           f"grader")
    torch.set_num_threads(1)  # the kernel and the checks share the worker's core
    return grade_submission(sub, course, seed)


@contextlib.contextmanager
def connect(address: str, workers: int) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a new ``LocalCluster`` of ``workers``
    processes (one thread each) when ``address`` is ``local``; closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--scheduler needs dask.distributed: pip install "
                           "'nncourse-grader[cluster]' (or `make install`)") from None
    with contextlib.ExitStack() as stack:
        if address == LOCAL:
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.WARNING))
            target: Any = cluster
        else:
            target = address
        try:
            client = stack.enter_context(Client(target, timeout=CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach a Dask scheduler at {address!r}: {exc} (start "
                               f"one with `dask scheduler`, or use --scheduler local)") from None
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(f"the scheduler at {address} has no worker after "
                               f"{WORKERS_TIMEOUT_S:g} s; start one with `dask worker "
                               f"{address}`") from None
        yield client


def check_workers(client: Client, course: Course, todo: Sequence[Task]) -> dict[str, str]:
    """Ask every worker what it sees; raise ClusterError naming each one that cannot grade.
    Returns each worker's sandbox sentence."""
    paths = [str(course.path)]
    subs = [task.submission for task in todo]
    paths += sorted({str(course.hidden_checks(sub.assignment)) for sub in subs})
    paths += [str(sub.path.absolute()) for sub in subs if not sub.problem]
    ours = worker_view([], course.limits)
    futures = {worker: client.submit(worker_view, paths, course.limits, workers=[worker],
                                     allow_other_workers=False, pure=False,
                                     key=f"grader-view-{uuid.uuid4().hex}")
               for worker in client.nthreads()}
    views: dict[str, dict[str, Any]] = {}
    for worker, future in futures.items():
        try:
            views[worker] = future.result(timeout=WORKERS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure there is that worker's problem
            raise ClusterError(f"worker {worker} cannot run the grader: "
                               f"{type(exc).__name__}: {exc}") from None
    problems = worker_problems(views, ours)
    if problems:
        raise ClusterError("the cluster cannot grade this course:\n  " + "\n  ".join(problems))
    return {worker: view["sandbox"] for worker, view in views.items()}


def grade_on_cluster(todo: Sequence[Task], course: Course, seed: int, address: str,
                     workers: int, progress: Listener) -> None:
    """Grade ``todo`` on the Dask cluster at ``address`` (``local``: a LocalCluster of
    ``workers`` processes); ``progress`` is told in this process as each submission is handed
    to the cluster and as its row comes back."""
    if not todo:
        return
    with connect(address, workers) as client:
        sandboxes = check_workers(client, course, todo)
        progress.note(f"Dask cluster {address}: {len(sandboxes)} worker(s); "
                      + "; ".join(f"{w}: {s}" for w, s in sorted(sandboxes.items())))
        _run(client, todo, course, seed, progress)


def _run(client: Client, todo: Sequence[Task], course: Course, seed: int,
         progress: Listener) -> None:
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]  # keys unique on a cluster shared by several runs
    engine = engine_fingerprint()
    queue = deque(todo)
    held: dict[Future[GradeRow], Task] = {}
    finished = as_completed()

    def hand_out() -> None:
        # a few tasks per worker thread at a time: "started" then means "handed out"
        room = max(2, IN_FLIGHT_PER_THREAD * sum(client.nthreads().values()))
        while queue and len(held) < room:
            task = queue.popleft()
            sub = task.submission
            # absolute: a worker's working folder is not ours
            here = dataclasses.replace(sub, path=sub.path.absolute())
            future = client.submit(_grade, here, course, seed, engine, pure=False,
                                   retries=RETRIES,
                                   key=f"grade-{sub.assignment}-{sub.student}-{task.index}-{run}")
            held[future] = task
            finished.add(future)
            progress.started(task)

    try:
        hand_out()
        for future in finished:
            task = held.pop(future)
            progress.done(task, _row(future, task, course, seed))
            hand_out()
    finally:
        client.cancel(list(held))


def _row(future: Future[GradeRow], task: Task, course: Course, seed: int) -> GradeRow:
    from distributed import KilledWorker

    try:
        row: GradeRow = future.result()
        # as the pool would store it
        return dataclasses.replace(row, path=str(task.submission.path))
    except GraderError:
        raise  # a problem of the course (as when grading here): it stops the run
    except KilledWorker as exc:
        why = f"every worker that took it died (Dask gave up: {exc})"
    except Exception as exc:  # noqa: BLE001 - one failed task must not stop the batch
        why = f"the task failed on the cluster: {type(exc).__name__}: {exc}"
    return grader_error_row(task.submission, course, seed, why)
