"""Where the grade command's jobs run: worker processes on this machine (the default)."""

import concurrent.futures
import multiprocessing
from concurrent.futures.process import BrokenProcessPool

from attention_course.grading.notebook_job import start_worker

RETRIES = 2  # times a job is given again when the worker process running it died (not the student's kernel)


class LocalPool(concurrent.futures.Executor):
    """Worker processes on this machine, started at once, each with its kernel zygote importing from the
    start. When a worker process dies, Python's pool is broken for every job it had; a new one takes its
    place, so that those jobs can be given again."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=start_worker)
        for _ in range(self.workers):  # the pool starts a process per task it is given, up to ``workers``
            pool.submit(int)
        return pool

    def submit(self, fn, /, *args, **kwargs):
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def processes(self) -> list[int]:
        """The pids of the worker processes now (for tests that kill one)."""
        return [process.pid for process in self._pool._processes.values()]
