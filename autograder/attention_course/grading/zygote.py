"""Kernels forked from a pre-loaded process: torch, transformers and the course package are
imported once per grading run instead of once per notebook.

``python -m attention_course.grading.zygote`` imports the heavy modules, then reads one JSON
request per line on stdin ({"argv", "cwd", "env", "memory_bytes"}) and forks an IPython kernel
for each, answering {"pid": ...}. Every kernel serves one notebook and is discarded. The zygote
never runs a notebook's code itself and never runs a parallel torch operation before forking.
"""

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading

PRELOAD = (
    "torch",
    "transformers",
    "matplotlib.pyplot",
    "nbformat",
    "attention_course.models",
    "attention_course.checks.diagnosis",
    "ipykernel.kernelapp",
)


def _reap(*_):
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_kernel(request: dict) -> None:
    """In the forked child: confine, then run an IPython kernel until it is shut down."""
    try:
        os.setsid()  # its own process group, so that a kill reaches whatever it spawns
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("memory_bytes"):
            limit = int(request["memory_bytes"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = ["ipykernel_launcher", *request["argv"]]
        app = IPKernelApp.instance()
        app.initialize(request["argv"])
        app.start()
    finally:
        os._exit(0)


def serve() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, _reap)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_kernel(request)
        print(json.dumps({"pid": pid}), flush=True)


class Zygote:
    """The grader's handle on a zygote process; thread-safe."""

    def __init__(self):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "attention_course.grading.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        ready = self._process.stdout.readline()
        if not ready:
            raise RuntimeError("the kernel zygote did not start")

    def spawn(self, argv: list[str], cwd: str, env: dict, memory_bytes: int | None) -> int:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "memory_bytes": memory_bytes}
        with self._lock:
            self._process.stdin.write(json.dumps(request) + "\n")
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the kernel zygote has died")
        return json.loads(answer)["pid"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


if __name__ == "__main__":
    serve()
