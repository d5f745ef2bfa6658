"""Grading on every core: a pool of worker processes, started once per run and reused.

The workers are forks of one process that has imported the grader, torch and pytest once
(multiprocessing's fork server, preloaded with this module), and they fork their kernels from
the run's one kernel fork server (``grader.kernel.zygote``), each over a channel of its own: the
imports are paid twice per run, whatever the number of workers. Each grades the submissions it
is sent one at a time (``grading.grade_stream``), keeping one session of an assignment's checks
while it is sent that assignment's submissions. The parent
hands out the submissions, prefers to give a worker more of the homework it is on, stores
each row as it comes back (the gradebook has one writer), and when a worker dies, the
submission it held gets a ``grader_error`` row, a new worker takes its place, and the batch
goes on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from grader.course.config import Course
from grader.kernel import zygote
from grader.kernel.sandbox import use_sandbox
from grader.pipeline.grading import Listener, grade_stream, grader_error_row
from grader.records import Task

Places = dict[bool, zygote.Place]


def worker_context() -> multiprocessing.context.ForkServerContext:
    """How grading workers are started (here and in the audit): as forks of a process that
    imported this module's imports once (no threads, no torch work done), not of the caller,
    whatever threads or state it has."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def start_workers_early() -> None:
    """Start the process the workers fork from now: it imports the grader while the caller
    does other work (collects the checks, say)."""
    worker_context()
    from multiprocessing import forkserver as mp_forkserver

    mp_forkserver.ensure_running()


def _work(conn: Connection, course: Course, seed: int) -> None:
    """A worker: take the kernel fork servers to use, then grade what the parent sends until
    it sends None."""
    import torch

    from grader.kernel.zygote import close_all, share

    torch.set_num_threads(1)
    share(conn.recv())

    def tasks() -> Iterator[Task]:
        while (task := conn.recv()) is not None:
            yield task

    try:
        grade_stream(course, seed, tasks(), lambda task, row: conn.send((task, row)))
    finally:
        close_all()
        conn.close()


class _Worker:
    def __init__(self, context: multiprocessing.context.ForkServerContext, course: Course,
                 seed: int) -> None:
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(target=_work, args=(child, course, seed),
                                                    daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None  # the submission it holds, if any
        self.assignment = ""  # the homework it graded last

    def send(self, task: Task | None) -> None:
        self.task = task
        if task is not None:
            self.assignment = task.submission.assignment
        self.conn.send(task)


def _pick(queue: deque[Task], assignment: str) -> Task:
    """The next task for a worker last on ``assignment``: more of it if any is left."""
    for task in queue:
        if task.submission.assignment == assignment:
            queue.remove(task)
            return task
    return queue.popleft()


def grade_in_workers(todo: Sequence[Task], course: Course, seed: int, jobs: int,
                     progress: Listener) -> None:
    """Grade ``todo`` in ``jobs`` worker processes; ``progress`` is told in this process as each
    submission is handed out and as its row comes back."""
    context = worker_context()
    queue = deque(todo)
    sandboxed, _ = use_sandbox(course.limits)
    zygote.start(sandboxed)  # importing while the workers start
    workers = [_Worker(context, course, seed) for _ in range(min(jobs, len(queue)))]
    places = zygote.to_share(sandboxed)
    for worker in workers:
        worker.conn.send(places)
    for worker in workers:
        task = queue.popleft()
        progress.started(task)
        worker.send(task)
    try:
        while any(w.task is not None for w in workers):
            busy = [w for w in workers if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    _collect(worker, workers, queue, context, course, seed, places, progress)
    finally:
        for worker in workers:
            if worker.process.is_alive():
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in workers:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()


def _collect(worker: _Worker, workers: list[_Worker], queue: deque[Task],
             context: multiprocessing.context.ForkServerContext, course: Course, seed: int,
             places: Places, progress: Listener) -> None:
    """Take what ``worker`` sent (a row), or notice it died; give it (or its replacement) the
    next task."""
    held = worker.task
    assert held is not None
    try:
        task, row = worker.conn.recv()
    except (EOFError, OSError):
        # the worker died with the submission in hand: that submission, not the batch, pays
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        progress.done(held, grader_error_row(held.submission, course, seed,
                                             f"the worker process died (exit code {code})"))
        worker.task = None
        if not queue:
            return
        workers[workers.index(worker)] = replacement = _Worker(context, course, seed)
        replacement.conn.send(places)
        replacement.assignment = worker.assignment
        worker = replacement
    else:
        progress.done(task, row)
    worker.task = None
    if queue:
        task = _pick(queue, worker.assignment)
        progress.started(task)
        worker.send(task)
