"""Where the grade command's jobs run: worker processes on this machine (the default), or the workers
of a Dask cluster (``--scheduler ADDRESS``, or ``local:N`` for a ``LocalCluster`` of N processes: see
``cluster``).

Either way a job goes out as plain data (``notebook_job.NotebookJob``, with the class's bundle) and
comes back as plain data (``NotebookOutcome``): nothing a student's process made is unpickled here.
Each worker process runs one job at a time (nbgrader's converters change the working directory), in
kernels forked from its machine's zygote (a Dask worker: its own), confined as on this machine
(``Limits``, bubblewrap where the worker has it). A Dask task's key is the job's key, so a retried
task draws the same inputs; the scheduler gives a dead worker's tasks to another worker by itself
(``distributed.scheduler.allowed-failures`` times); a student's crash or time-out is an outcome,
never an error, so it is never retried.
"""

import concurrent.futures
import multiprocessing
import os
import shutil
import tempfile
import threading
from concurrent.futures.process import BrokenProcessPool

from attention_course.grading.notebook_job import ClassBundle, NotebookJob, grade_job
from attention_course.grading.zygote import Zygote, start_shared_zygote

RETRIES = 2  # times the local pool gives a job again when the worker process running it died (not the student's kernel)


class Workers:
    """What the grade command needs of a place that runs jobs."""

    count: int  # worker processes (a local pool's; a cluster's when it was asked)
    own_retries = False  # whether the grade command gives a dead worker's job again (a cluster does it itself)

    def submit_job(self, bundle: ClassBundle, job: NotebookJob) -> concurrent.futures.Future:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# What a worker's jobs import (nbgrader's converters and the feedback page's exporter, the course's
# execution and judging, torch, transformers' GPT-2 for the quiz keys' set-up): imported once, by
# multiprocessing's fork server, and every worker is forked from it with them (3 to 5 s of CPU a worker).
# The fork server starts with a process's first pool and serves its later pools too, with the code and the
# environment it started with.
WORKER_PRELOAD = [
    "attention_course.grading.notebook_job",
    "attention_course.grading.nbgrader_plugin",
    "attention_course.grading.verdicts.judge",
    "attention_course.models",
    "nbconvert.exporters.html",
    "nbgrader.preprocessors",
]


class LocalPool(Workers):
    """Worker processes on this machine, started at once, and one kernel zygote for all of them, importing
    from the start (one zygote's imports, not one per worker). When a worker process dies, Python's pool is
    broken for every job it had; a new one takes its place, so that those jobs can be given again."""

    own_retries = True

    def __init__(self, workers: int):
        self.count = workers
        self._folder = tempfile.mkdtemp(prefix="attention-course-zygote-")  # 0700: the workers' user only
        self._address = os.path.join(self._folder, "socket")
        self._zygote = Zygote(address=self._address)
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        # Forked from multiprocessing's fork server, not from the grader's process: that one has threads (a
        # fork would copy their locks, not them); the fork server has one thread, and the workers' imports.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        pool = concurrent.futures.ProcessPoolExecutor(self.count, mp_context=context,
                                                      initializer=start_shared_zygote,
                                                      initargs=(self._address,))
        # The pool starts a process per task it is given, up to ``count``; a thread gives them, since a
        # start waits for the fork server's imports, and the grader registers the assignment meanwhile.
        self._starting = threading.Thread(target=_start_processes, args=(pool, self.count), name="starting the grading pool")
        self._starting.start()
        return pool

    def submit_job(self, bundle: ClassBundle, job: NotebookJob) -> concurrent.futures.Future:
        try:
            return self._pool.submit(grade_job, bundle, job)
        except BrokenProcessPool:  # its other workers are killed: their jobs are given again
            self._starting.join()
            _end(self._pool, seconds=0)
            self._pool = self._start()
            return self._pool.submit(grade_job, bundle, job)

    def close(self) -> None:
        # The workers end while the grader stores the grades (a thread: Python waits for it before it exits).
        threading.Thread(target=self._end, name="ending the grading pool").start()

    def _end(self) -> None:
        self._starting.join()
        _end(self._pool)
        self._zygote.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def worker_processes(self) -> list[int]:
        """The pids of the worker processes now (for tests that kill one)."""
        return [process.pid for process in self._pool._processes.values()]


def _start_processes(pool: concurrent.futures.ProcessPoolExecutor, count: int) -> None:
    for _ in range(count):
        pool.submit(int)


def _end(pool: concurrent.futures.ProcessPoolExecutor, seconds: float = 10) -> None:
    """Shut the pool down and make sure its processes are gone within ``seconds``: a worker that does not
    end by itself (one that a broken pool's SIGTERM did not stop: nbclient handles SIGTERM while a
    notebook runs) would keep the grader's Python from exiting."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(seconds)
        if process.is_alive():
            process.kill()


class InExecutor(Workers):
    """Jobs run by any ``concurrent.futures`` executor (threads of this process, in tests)."""

    def __init__(self, executor: concurrent.futures.Executor, count: int = 1):
        self.executor, self.count = executor, count

    def submit_job(self, bundle: ClassBundle, job: NotebookJob) -> concurrent.futures.Future:
        return self.executor.submit(grade_job, bundle, job)

    def close(self) -> None:
        pass


def workers_for(scheduler: str, count: int, settings=None) -> Workers:
    """A local pool of ``count`` processes, or the Dask cluster ``scheduler`` names (``cluster.Cluster`` settings)."""
    if not scheduler:
        return LocalPool(count)
    from attention_course.grading.cluster import DaskWorkers

    return DaskWorkers(scheduler, settings)
