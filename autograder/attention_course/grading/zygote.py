"""Kernels forked from a pre-loaded process: torch, transformers and the course package are
imported once per grading run instead of once per notebook.

``python -m attention_course.grading.zygote`` imports the heavy modules, then reads one JSON
request per line on stdin ({"argv", "cwd", "env", "memory_bytes", "uid", "threads", "clean"}) and
forks an IPython kernel for each, answering {"pid": ...}. Every kernel serves one notebook and is
discarded. The zygote never runs a notebook's code itself and never runs a parallel torch operation
before forking. ``python -m attention_course.grading.zygote SOCKET`` serves the same requests from
every worker process of this machine, over a Unix socket (``ZygoteClient``): one zygote's imports for
the whole pool; it ends when its owner closes its stdin.

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
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
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
    # What every kernel's start imports besides (its debugger's, its history's, its magics'): 0.08 s of
    # CPU a kernel, two kernels a notebook.
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "IPython.core.logger",
    "IPython.extensions.storemagic",
    "sqlite3",
    "tornado.platform.asyncio",
    "tornado.queues",
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


def _fork_kernel(request: dict, inherited: list) -> int:
    pid = os.fork()
    if pid == 0:
        for connection in inherited:  # a kernel must not be able to ask the zygote for kernels
            connection.close()
        _become_kernel(request)
    return pid


def serve(address: str | None = None) -> None:
    listener = None
    if address:  # bound before the imports: workers' requests wait in its backlog meanwhile
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(64)
    # debugpy (the kernel's debugger) warns on import that Python's frozen modules hide breakpoints: not here.
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, _reap)
    print(json.dumps({"ready": True}), flush=True)
    if listener is None:
        for line in sys.stdin:
            print(json.dumps({"pid": _fork_kernel(json.loads(line), [])}), flush=True)
    else:
        _serve_workers(listener)
    os._exit(0)  # the grader is done with it: no need to tear torch down (seconds)


def _serve_workers(listener: socket.socket) -> None:
    """One request per line from each connected worker, one thread only (a fork copies no other thread's locks)."""
    selector, pending = selectors.DefaultSelector(), {}
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)  # its end (EOF): the owner is done
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                connection, _ = listener.accept()
                selector.register(connection, selectors.EVENT_READ)
                pending[connection] = b""
            elif key.fileobj == sys.stdin.fileno():
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            else:
                _answer(key.fileobj, listener, selector, pending)


def _answer(connection: socket.socket, listener: socket.socket, selector, pending: dict) -> None:
    """A worker's requests: a kernel forked for each. A worker that died (killed in the middle of a request, say)
    loses its connection, never the zygote."""
    try:
        data = connection.recv(1 << 16)
        if data:
            *lines, pending[connection] = (pending[connection] + data).split(b"\n")
            for line in lines:
                pid = _fork_kernel(json.loads(line), [listener, *pending])
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            return
    except OSError:  # reset, or a broken pipe: the worker is gone
        pass
    selector.unregister(connection)
    connection.close()
    del pending[connection]


class _Forks:
    """Asks a zygote for kernels; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()

    def spawn(self, argv: list[str], cwd: str, env: dict, memory_bytes: int | None, uid: int | None = None,
              threads: int | None = None, clean: bool = False, join: dict | None = None) -> int:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "memory_bytes": memory_bytes, "uid": uid, "threads": threads,
                   "clean": clean, "join": join}
        with self._lock:
            answer = self._ask(json.dumps(request) + "\n")
        if not answer:
            raise RuntimeError("the kernel zygote has died")
        return json.loads(answer)["pid"]

    def _ask(self, line: str) -> str:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class Zygote(_Forks):
    """The grader's handle on a zygote process. ``address``: it serves this machine's workers there
    (``ZygoteClient``) instead of this process."""

    def __init__(self, address: str | None = None):
        """Started now, so that it imports while the grader does other work (confined kernels are
        forked from it too, unless ``execute.SANDBOX`` asks for fresh Pythons)."""
        super().__init__()
        self._ready = False
        self._process = subprocess.Popen(
            [sys.executable, "-m", "attention_course.grading.zygote", *([address] if address else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _ask(self, line: str) -> str:
        if not self._ready:  # the zygote imports while the grader does other work; the first spawn waits for it
            if not self._process.stdout.readline():
                raise RuntimeError("the kernel zygote did not start")
            self._ready = True
        self._process.stdin.write(line)
        return self._process.stdout.readline()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:  # still importing: it has nothing to finish
                self._process.kill()
                self._process.wait()


class ZygoteClient(_Forks):
    """A worker process's handle on its machine's zygote (``Zygote(address)``), over its Unix socket."""

    def __init__(self, address: str):
        super().__init__()
        self._address, self._connection = address, None

    def _ask(self, line: str) -> str:
        if self._connection is None:
            self._connection = self._connect().makefile("rw", encoding="utf-8", newline="\n")
        self._connection.write(line)
        self._connection.flush()
        return self._connection.readline()

    def _connect(self, seconds: float = 60) -> socket.socket:
        """The zygote binds its socket as soon as its Python starts: until then, try again."""
        deadline = time.monotonic() + seconds
        while True:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(self._address)
                return connection
            except (FileNotFoundError, ConnectionRefusedError):
                connection.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no kernel zygote at {self._address}") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_SHARED: list[_Forks] = []


def shared_zygote() -> _Forks:
    """This process's zygote (nbgrader's, or a grade command worker's): started on first use, closed when it exits."""
    if not _SHARED:
        start_shared_zygote()
    return _SHARED[0]


def start_shared_zygote(address: str | None = None) -> None:
    """A worker's first step, before it imports anything heavy: its zygote starts importing at once, or
    (``address``) it uses its machine's."""
    if not _SHARED:
        _SHARED.append(ZygoteClient(address) if address else Zygote())
        atexit.register(_SHARED[0].close)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else None)
