"""Kernels forked from a pre-loaded process: torch, transformers and the course package are
imported once per grading run instead of once per notebook.

``python -m attention_course.grading.zygote`` imports the heavy modules, then reads one JSON
request per line on stdin ({"argv", "cwd", "env", "memory_bytes", "uid", "threads", "clean"}) and
forks an IPython kernel for each, answering {"pid": ...}. Every kernel serves one notebook and is
discarded. The zygote never runs a notebook's code itself and never runs a parallel torch operation
before forking.

Where bubblewrap can confine kernels, a forked kernel first joins the namespaces of a sandbox that
bwrap made for it (the request's "join": the pid of a placeholder in it; ``isolation.join``) and
loses every capability. Run as root and unconfined, a forked kernel gets a user id of its own where
the Python it runs is readable by other users.
"""


import atexit
import faulthandler
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import traceback

from attention_course.grading.isolation import drop_privileges, join, package_folder

NOGROUP = 65534
KERNEL_LOG = ".kernel.log"  # the kernel process's own stdout and stderr, in its folder
FILE_BYTES = 256 * 2**20  # the largest file a kernel may write (forked here or confined by bwrap)

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


def _forget_the_package(package: str) -> None:
    """For a clean kernel (the harvest's): the course package leaves this process's modules and path;
    the harvest notebook brings the few modules it needs as source."""
    folder = os.path.dirname(package)
    for name in [name for name in sys.modules if name == "attention_course" or name.startswith("attention_course.")]:
        del sys.modules[name]
    sys.path[:] = [path for path in sys.path if os.path.realpath(path or ".") != folder]


def _become_kernel(request: dict) -> None:
    """In the forked child: limit, then run an IPython kernel until it is shut down."""
    try:
        os.setsid()  # its own process group, so that a kill reaches whatever it spawns
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("clean"):
            _forget_the_package(package_folder())
        joined = request.get("join")
        if joined:  # into a sandbox that bwrap made for this kernel
            join(joined["pid"], joined["user_namespace"])
            os.environ.update(HOME=request["cwd"], MPLCONFIGDIR=request["cwd"], TMPDIR=request["cwd"])
        uid = request.get("uid")
        if joined:
            drop_privileges()  # bwrap's --cap-drop is for its own child: a joining process drops its own
        elif uid is not None and os.getuid() == 0:
            # A user of its own: it cannot write the grader's files, the submissions, or another
            # kernel's folder. Its folder and connection file are handed over first.
            connection_file = request["argv"][request["argv"].index("-f") + 1]
            for path in (request["cwd"], connection_file):
                os.chown(path, uid, NOGROUP)
            os.chmod(request["cwd"], 0o700)
            os.setgroups([])
            os.setgid(NOGROUP)
            os.setuid(uid)
            os.environ.update(HOME=request["cwd"], MPLCONFIGDIR=request["cwd"], USER=f"student{uid}")
        os.chdir(request["cwd"])
        if request.get("memory_bytes"):
            limit = int(request["memory_bytes"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        log = os.open(os.path.join(request["cwd"], KERNEL_LOG), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd in (1, 2):
            os.dup2(log, fd)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
        faulthandler.enable()  # a crash leaves its name in the log
        if request.get("threads"):
            # Kernels running side by side share the cores: more threads than cores only thrash.
            os.environ["OMP_NUM_THREADS"] = str(request["threads"])
            sys.modules["torch"].set_num_threads(request["threads"])
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = ["ipykernel_launcher", *request["argv"]]
        app = IPKernelApp.instance()
        app.initialize(request["argv"])
        app.start()
    except BaseException:
        traceback.print_exc()  # into the kernel's log when it is open, else the zygote's stderr
        os._exit(1)
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
    os._exit(0)  # the grader is done with it: no need to tear torch down (seconds)


class Zygote:
    """The grader's handle on a zygote process; thread-safe."""

    def __init__(self):
        """Started now, so that it imports while the grader does other work (confined kernels are
        forked from it too, unless ``execute.SANDBOX`` asks for fresh Pythons)."""
        self._lock = threading.Lock()
        self._ready = False
        self._process = subprocess.Popen(
            [sys.executable, "-m", "attention_course.grading.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _wait_until_ready(self) -> None:
        """The zygote imports while the grader does other work; the first spawn waits for it."""
        if not self._ready:
            if not self._process.stdout.readline():
                raise RuntimeError("the kernel zygote did not start")
            self._ready = True

    def spawn(self, argv: list[str], cwd: str, env: dict, memory_bytes: int | None, uid: int | None = None,
              threads: int | None = None, clean: bool = False, join: dict | None = None) -> int:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "memory_bytes": memory_bytes, "uid": uid, "threads": threads,
                   "clean": clean, "join": join}
        with self._lock:
            self._wait_until_ready()
            self._process.stdin.write(json.dumps(request) + "\n")
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the kernel zygote has died")
        return json.loads(answer)["pid"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:  # still importing: it has nothing to finish
                self._process.kill()
                self._process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


_SHARED: list[Zygote] = []


def shared_zygote() -> Zygote:
    """This process's zygote (nbgrader's, or a grade command worker's): started on first use, closed when it exits."""
    if not _SHARED:
        _SHARED.append(Zygote())
        atexit.register(_SHARED[0].close)
    return _SHARED[0]


def start_shared_zygote() -> None:
    """A worker's first step, before it imports anything heavy: its zygote starts importing at once."""
    shared_zygote()


if __name__ == "__main__":
    serve()
