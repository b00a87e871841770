"""Engines that run archive tasks: worker processes on this machine, or Ray.

Both take the same :class:`~stream.archive.inputs.Task` list and yield
:class:`~stream.archive.worker.TaskResult` s as tasks finish, in any order; the driver
(:mod:`stream.cli.archive`) stitches and writes, so both engines write the same outputs.

Each worker holds its own ONNX Runtime sessions (one bundle opened per worker, kept for all its
tasks) with ``threads`` intra-op threads and as many decoder threads, so that workers x threads
matches the cores given to the run and nothing is oversubscribed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stream.archive.inputs import Task
from stream.archive.worker import TaskResult, caption_task
from stream.engines.ray_cluster import connect, import_ray
from stream.model.bundle import open_bundle
from stream.model.captioning import CaptionCore
from stream.model.sessions import SessionSettings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- local processes

_WORKER: dict[str, Any] = {}  # this worker process's core and thread budget


def _init_worker(bundle: str, device: str, threads: int, beam: int,
                 encode_every_frame: bool = False, precision: str = "auto") -> None:
    loaded = open_bundle(bundle, SessionSettings(device=device, threads=threads,
                                                 precision=precision))
    _WORKER["core"] = CaptionCore(loaded, beam=beam, encode_every_frame=encode_every_frame)
    _WORKER["threads"] = threads


def _init_pool_worker(bundle: str, device: str, threads: int, beam: int,
                      encode_every_frame: bool, precision: str = "auto") -> None:
    # Ctrl-C reaches the whole process group: the driver handles it and ends the workers, so a
    # worker must not die of it on its own (with a traceback each).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(bundle, device, threads, beam, encode_every_frame, precision)


def _run_task(task: Task) -> TaskResult:
    return caption_task(_WORKER["core"], task, _WORKER["threads"])


def run_local(tasks: list[Task], bundle: Path, device: str, workers: int, threads: int,
              beam: int = 1, encode_every_frame: bool = False,
              precision: str = "auto") -> Iterator[TaskResult]:
    """Run ``tasks`` on ``workers`` processes (spawned: no state inherited from the driver).

    With one worker the tasks run in this process (no start-up cost, easy to debug).
    """
    if workers == 1:
        _init_worker(str(bundle), device, threads, beam, encode_every_frame, precision)
        for task in tasks:
            yield _run_task(task)
        return
    # A worker that dies (killed, out of memory, a crash in native code) breaks the pool and
    # every unfinished task in it. Those get one more pool; tasks lost twice then run alone,
    # so that only the one that kills its worker is recorded as failed.
    initargs = (str(bundle), device, threads, beam, encode_every_frame, precision)
    remaining = list(tasks)
    for _ in range(2):
        lost: list[Task] = []
        yield from _pool_run(remaining, workers, initargs, lost)
        remaining = lost
    for task in remaining:
        lost = []
        yield from _pool_run([task], 1, initargs, lost)
        if lost:
            yield TaskResult(task.path, task.chunk, task.chunks,
                             error=f"{task.path}: the worker process died while captioning it")


def _pool_run(tasks: list[Task], workers: int, initargs: tuple[Any, ...],
              lost: list[Task]) -> Iterator[TaskResult]:
    """Results of ``tasks`` from a pool of spawned workers; tasks of a broken pool go to
    ``lost``."""
    if not tasks:
        return
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context,
                               initializer=_init_pool_worker, initargs=initargs)
    try:
        with _children_ignore_ctrl_c():
            futures = {pool.submit(_run_task, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                lost.append(futures[future])
                continue
            yield result
    except BaseException:
        # The driver stopped reading (its manifest cannot be written, Ctrl-C, ...): no queued
        # task may run after that, and the running ones are stopped, not waited for.
        _stop_pool(pool, set(multiprocessing.active_children()) - before)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Ignore SIGINT while worker processes are spawned (the pool spawns them on submit).

    An ignored signal stays ignored across exec, so a worker starts immune to Ctrl-C instead of
    becoming so only once its initializer runs: a Ctrl-C during its start-up would print a
    traceback from it. The driver's own handler is back as soon as the workers exist."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_pool(pool: ProcessPoolExecutor, workers: set[multiprocessing.process.BaseProcess],
               grace: float = 5.0) -> None:
    """Cancel the pool's pending tasks and end its worker processes within ``grace`` seconds
    (terminated, then killed)."""
    # CPython's thread that runs the pool (private; None where there is none). It closes the
    # pool's wakeup pipe as it ends, which races with the interpreter's exit handler writing to
    # that pipe ("Exception ignored ... Bad file descriptor" after a Ctrl-C, CPython 3.11):
    # joined below, so that it has ended before the exit.
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    # The pool's own manager thread may reap a worker first, after which is_alive() cannot
    # tell; a process's sentinel becomes ready when it exits, whoever waits for it.
    running = set(workers)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        ready = set(multiprocessing.connection.wait([w.sentinel for w in running],
                                                    max(0.0, deadline - time.monotonic())))
        running = {w for w in running if w.sentinel not in ready}
    for worker in running:
        log.warning("worker process %s did not stop within %.0f s; killing it", worker.pid,
                    grace)
        worker.kill()
    for worker in workers:  # reap them (at once: each has exited, or was killed)
        worker.join(1.0)
    if manager is not None:
        manager.join(grace)  # its workers gone, it ends at once (the pool is broken)


# ---------------------------------------------------------------------------- Ray


class RayCaptioner:
    """Ray Data's stateful transform: one per Ray worker, holding that worker's sessions.

    Rows are tasks (one per video or chunk, never per frame: a stream's state stays in one
    place); each call gets a batch of one row and returns its result row.
    """

    def __init__(self, bundle: str, device: str, threads: int, beam: int,
                 encode_every_frame: bool = False, precision: str = "auto") -> None:
        _init_worker(bundle, device, threads, beam, encode_every_frame, precision)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i in range(len(batch["path"])):
            task = Task(path=str(batch["path"][i]), chunk=int(batch["chunk"][i]),
                        chunks=int(batch["chunks"][i]), start=float(batch["start"][i]),
                        end=None if batch["end"][i] < 0 else float(batch["end"][i]),
                        warmup=float(batch["warmup"][i]), hwaccel=str(batch["hwaccel"][i]))
            for key, value in _run_task(task).to_row().items():
                out.setdefault(key, []).append("" if value is None else value)
        return out


def run_ray(tasks: list[Task], bundle: Path, device: str, workers: int, threads: int,
            beam: int = 1, address: str | None = None, gpus_per_worker: float = 0.0,
            cpus: int | None = None, encode_every_frame: bool = False,
            precision: str = "auto") -> Iterator[TaskResult]:
    """Run ``tasks`` with Ray Data: connect to ``address`` (or RAY_ADDRESS), else start a local
    Ray with ``cpus`` CPUs; ``workers`` actors of ``threads`` CPUs (and ``gpus_per_worker``)."""
    import_ray()  # one line saying how to install Ray when it is missing
    import ray.data

    # After ray.data's import, which configures its own loggers: keep only errors.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started_here = connect(address, cpus)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver draws its own
        rows = [asdict(t) | {"end": -1.0 if t.end is None else t.end} for t in tasks]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        results = dataset.map_batches(
            RayCaptioner, fn_constructor_kwargs={"bundle": str(Path(bundle).resolve()),
                                                 "device": device, "threads": threads,
                                                 "beam": beam,
                                                 "encode_every_frame": encode_every_frame,
                                                 "precision": precision},
            batch_size=1, concurrency=workers, num_cpus=threads, num_gpus=gpus_per_worker)
        for row in results.iter_rows():
            yield TaskResult.from_row(row)
    finally:
        if started_here:
            ray.shutdown()
