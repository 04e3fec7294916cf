"""Run one prepared notebook in a fresh kernel forked from the zygote (into a bubblewrap sandbox
where this machine allows one; ``ConfinedProvisioner``), within limits: seconds
per cell, seconds for the whole notebook, bytes of output per cell, memory of the kernel. The
kernel works in a scratch folder. Whatever happens, the result is a notebook in which a test
cell that did not run to completion carries an error, so it cannot earn points."""

import asyncio
import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets import Any, default
import zmq

from attention_course.grading.cells import is_test_cell
from attention_course.grading.limits import Limits
from attention_course.grading.isolation import package_folder, placeholder_command, sandbox_command, sandbox_mode, visible_paths
from attention_course.grading.zygote import FILE_BYTES, KERNEL_LOG, NOGROUP


class ForkedProcess:
    """Enough of ``subprocess.Popen`` for jupyter_client, for a kernel that the zygote forked."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                with open(f"/proc/{self.pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        self.returncode = -1
            except (FileNotFoundError, ProcessLookupError):  # gone, before or while /proc was read
                self.returncode = -1
        return self.returncode

    def wait(self, timeout=None):
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel {self.pid} still running")
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum):
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)


# What runs in the sandbox: a fresh Python with the limits the zygote sets on a forked kernel, then
# ipykernel's own launcher (``sys.argv`` after ``-c`` are the kernel's arguments).
_CONFINED_KERNEL = """import resource, sys
for limit, value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_FSIZE, {file_bytes})):
    if value:
        resource.setrlimit(limit, (value, value))
if sys.path and sys.path[0] == "":
    del sys.path[0]
from ipykernel.kernelapp import launch_new_instance
sys.argv[0] = "ipykernel_launcher"
launch_new_instance()
"""


# How a confined kernel starts: "fork" (default), forked from the zygote into a sandbox that bwrap
# made for it (0.56 s for a start, a cell importing torch and transformers, and a shutdown), or
# "fresh", a fresh Python that bwrap runs (2.7 s: it imports everything again). A kernel that gets
# a user of its own (the grader is root) is a fresh one: bwrap runs as that user.
SANDBOX = os.environ.get("ATTENTION_COURSE_SANDBOX", "fork")


class ConfinedProvisioner(LocalProvisioner):
    """jupyter_client's public way to start a kernel differently (a kernel provisioner). With
    ``confine``, in a bubblewrap sandbox of its own (see ``isolation``): forked from the zygote into
    it, or a fresh Python there (``SANDBOX``); else forked from the zygote, unconfined. Either way the
    kernel works in its own folder (``cwd``), in its own process group (every signal and the final
    kill reach whatever it started), with the memory and file-size limits, its output in
    ``KERNEL_LOG`` there."""

    zygote = Any()
    memory_bytes = Any(None)
    uid = Any(None)
    threads = Any(None)
    confine = Any(False)
    clean = Any(False)
    placeholder = None  # the bwrap process holding a forked kernel's sandbox

    async def launch_kernel(self, cmd: list[str], **kwargs) -> dict:
        argv = cmd[cmd.index("-f"):]  # the connection file and extra arguments
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = dict(kwargs.get("env") or os.environ)
        if self.confine and SANDBOX != "fresh" and not (self.uid is not None and os.getuid() == 0):
            self.placeholder, joined = self._launch_placeholder(cwd)
            pid = self.zygote.spawn(argv, cwd=cwd, env=env, memory_bytes=self.memory_bytes, uid=None,
                                    threads=self.threads, clean=self.clean, join=joined)
            self.process = ForkedProcess(pid)
        elif self.confine:
            self.process = self._launch_confined(argv, cwd, env)
            pid = self.process.pid
        else:
            pid = self.zygote.spawn(argv, cwd=cwd, env=env, memory_bytes=self.memory_bytes, uid=self.uid,
                                    threads=self.threads, clean=self.clean)
            self.process = ForkedProcess(pid)
        self.pid = self.pgid = pid
        self.cwd = cwd
        return self.connection_info

    def _launch_placeholder(self, cwd: str):
        package = package_folder()
        user_namespace = sandbox_mode() == "user"
        read, write = os.pipe()
        command = placeholder_command(cwd, visible_paths(with_package=not self.clean), (package,) if self.clean else (),
                                      user_namespace, write)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, pass_fds=(write,),
                                   start_new_session=True)
        os.close(write)
        with os.fdopen(read) as info:
            pid = json.loads(info.read())["child-pid"]  # bwrap closes it once written
        ready = process.stdout.readline()  # the sandbox is complete: its namespaces can be joined
        process.stdout.close()
        if ready.strip() != b"ready":
            process.kill()
            process.wait()
            raise RuntimeError(f"bubblewrap did not make the sandbox (exit status {process.poll()})")
        return process, {"pid": pid, "user_namespace": user_namespace}

    def end_sandbox(self) -> None:
        """Kill the placeholder of a forked kernel's sandbox: bwrap's process 1 ends with it, and
        every process left in the sandbox is killed."""
        if self.placeholder is not None:
            self.placeholder.kill()
            self.placeholder.wait()
            self.placeholder = None

    async def kill(self, restart: bool = False) -> None:
        await super().kill(restart)
        self.end_sandbox()
        # Until the kernel is gone: jupyter_client looks every 0.1 s, and a confined kernel is rarely gone at
        # its first look (0.1 s of every confined kernel's end); past the deadline, jupyter_client waits on.
        deadline = time.monotonic() + 2
        while self.process is not None and self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        self.end_sandbox()

    def _launch_confined(self, argv: list[str], cwd: str, env: dict) -> subprocess.Popen:
        package = package_folder()
        user_namespace = sandbox_mode() == "user"
        uid = self.uid if os.getuid() == 0 and user_namespace else None
        # The grader's PYTHONPATH, from the kernel's folder; for the harvest kernel without the
        # package (nor, below, on its file system).
        path = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if self.clean:
            path = [p for p in path if os.path.realpath(p) != os.path.dirname(package)]
        if path:
            env["PYTHONPATH"] = os.pathsep.join(path)
        else:
            env.pop("PYTHONPATH", None)
        env.update(HOME=cwd, MPLCONFIGDIR=cwd, TMPDIR=cwd)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)  # kernels side by side share the cores
        log = os.open(os.path.join(cwd, KERNEL_LOG), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if uid is not None:
            # A user of its own: it cannot write the grader's files, the submissions, or another
            # kernel's folder. Its folder, connection file and log are handed over first.
            for path in (cwd, argv[1], os.path.join(cwd, KERNEL_LOG)):
                os.chown(path, uid, NOGROUP)
            os.chmod(cwd, 0o700)
            env.update(USER=f"student{uid}")
        code = _CONFINED_KERNEL.format(memory=self.memory_bytes or 0, file_bytes=FILE_BYTES)
        command = [*sandbox_command(cwd, visible_paths(with_package=not self.clean), (package,) if self.clean else (),
                                    user_namespace=user_namespace),
                   sys.executable, "-X", "faulthandler", "-c", code, *argv]
        try:
            return subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True,
                                    **({"user": uid, "group": NOGROUP, "extra_groups": []} if uid is not None else {}))
        finally:
            os.close(log)


class PromptKernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel has answered kernel_info on the shell channel and IOPub
    has delivered a message. jupyter_client then waits for 0.2 s of silence on IOPub to flush the start's messages:
    0.2 s of every kernel start (two a notebook), for messages nbclient ignores anyway (it keeps only those whose
    parent is the request it sent). Its sockets connect before the kernel has bound its own, and ZeroMQ tries
    again after ``RECONNECT_MS`` (its default, 100 ms, was half of a kernel's start: 0.1 s a kernel)."""

    RECONNECT_MS = 20

    @default("context")
    def _context_default(self):
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, self.RECONNECT_MS)  # for the sockets it makes from now on
        return context

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while time.monotonic() < deadline:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
                if reply["msg_type"] == "kernel_info_reply":
                    await self.iopub_channel.get_msg(timeout=0.2)  # IOPub is connected: outputs will not be lost
                    self._handle_kernel_info_reply(reply)
                    return
            except Empty:
                pass
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
        raise RuntimeError(f"Kernel didn't respond in {timeout} s")


class CappedClient(NotebookClient):
    """Keeps at most ``output_bytes`` of output per cell, so a flood of prints costs nothing, and
    notes which cells ran out of time."""

    output_bytes = 1_000_000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timed_out: list[int] = []

    async def _async_handle_timeout(self, timeout, cell=None):
        if cell is not None:
            self.timed_out.append(self.nb.cells.index(cell))
        return await super()._async_handle_timeout(timeout, cell)

    def output(self, outs, msg, display_id, cell_index):
        size = sum(len(str(out)) for out in outs) + len(str(msg.get("content", "")))
        if size > self.output_bytes:
            if not any(out.get("name") == "truncated" for out in outs):
                outs.append(nbformat.v4.new_output("stream", name="truncated",
                                                   text=f"\n[output beyond {self.output_bytes:,} bytes dropped]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)


NOT_RUN = "TestNotRun"
UID_COUNTER = ".cache/attention-course/kernel-uids"  # in the grader's home: its kernels' users cannot write there


def kernel_uid(first_uid: int) -> int:
    """A kernel's user: ``first_uid`` plus the next number of this machine's counter (mod 1000). Every grading
    process here (a pool's workers, Dask workers, nbgrader) draws from the same counter, under a lock, so that no
    two kernels running at once share a user (who could read each other's folder or kill each other)."""
    path = Path.home() / UID_COUNTER
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(handle).st_uid != os.getuid():
            raise RuntimeError(f"{path} belongs to another user: kernels' users cannot be counted there")
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        number = int(os.pread(handle, 32, 0).strip() or b"0")
        os.pwrite(handle, f"{number + 1:<20}".encode(), 0)  # fixed width: no stale digits
    finally:
        os.close(handle)
    return first_uid + number % 1000


_FOLDERS: list[str] = []


def _kernel_folders() -> str:
    """One folder per grading process for its kernels' folders: an isolated kernel sees its own only."""
    if not _FOLDERS:
        _FOLDERS.append(tempfile.mkdtemp(prefix="attention-course-kernels-"))
        atexit.register(shutil.rmtree, _FOLDERS[0], True)
    return _FOLDERS[0]


def mark_unfinished_tests(nb, reason: str) -> None:
    """A test cell that did not complete gets an error, so it earns nothing."""
    for cell in nb.cells:
        if is_test_cell(cell) and not any(o.get("output_type") == "error" for o in cell.outputs):
            if cell.get("execution_count") is None:
                cell.outputs.append(nbformat.v4.new_output("error", ename=NOT_RUN, evalue=reason, traceback=[f"{NOT_RUN}: {reason}"]))


def _last_words(folder: str) -> str:
    """The last error a dead kernel wrote to its own log, to say why it died."""
    try:
        with open(os.path.join(folder, KERNEL_LOG), errors="replace") as log:
            text = log.read()[-20_000:]
    except OSError:
        return ""
    errors = re.findall(r"^(?:Fatal Python error: .*|\w*(?:Error|Exception)\b.*)$", text, flags=re.MULTILINE)
    return f" ({errors[-1].strip()[:200]})" if errors else ""


async def execute_notebook(nb, zygote, limits: Limits, files_from: str | None = None, clean: bool = False) -> str:
    """Execute ``nb`` in place, in a scratch folder holding a copy of ``files_from``'s other files;
    return a status: "ok" or what went wrong. ``clean``: in a kernel without the course package
    (neither imported, nor on its path, nor, isolated, on its file system): the harvest's."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="grading-", dir=_kernel_folders()) as scratch:
        if files_from:
            shutil.copytree(files_from, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.ipynb"))
        uid = None if limits.first_uid is None else kernel_uid(limits.first_uid)
        # An isolated kernel has no network: it is reached over Unix sockets in its folder.
        sockets = {"transport": "ipc", "ip": os.path.join(scratch, ".kernel")} if limits.isolate else {}
        km = AsyncKernelManager(kernel_name="python3", kernel_id=str(uuid.uuid4()), client_factory=PromptKernelClient,
                                connection_file=os.path.join(scratch, ".kernel.json"), **sockets)
        km.provisioner = ConfinedProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km, zygote=zygote,
                                             memory_bytes=limits.memory_bytes, uid=uid, threads=limits.threads,
                                             confine=limits.isolate, clean=clean)
        client = CappedClient(
            nb, km=km, timeout=limits.cell_seconds, allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {limits.cell_seconds} s",
                              "traceback": [f"CellTimeoutError: the cell ran longer than {limits.cell_seconds} s"]},
            # Tracebacks as Python prints them: IPython's default (Context) quotes and highlights each frame's
            # surroundings, twice an error (shown, and kept for %tb): 0.05 s of CPU an error, 0.6 s a notebook
            # whose every exercise raises. The feedback shows each frame and its failing line either way.
            extra_arguments=["--HistoryManager.hist_file=:memory:", "--InteractiveShell.xmode=Plain"],
            resources={"metadata": {"path": scratch}},
        )
        client.output_bytes = limits.output_bytes
        status = "ok"
        try:
            await asyncio.wait_for(client.async_execute(), timeout=limits.notebook_seconds)
        except asyncio.TimeoutError:
            status = f"stopped: the notebook ran longer than {limits.notebook_seconds} s"
        except DeadKernelError:
            status = "stopped: the kernel died (os._exit, a crash, or out of memory)"
        except Exception as error:  # a broken notebook must not stop the class
            status = f"stopped: {type(error).__name__}: {error}"
        finally:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
            km.provisioner.end_sandbox()  # also where the kernel died by itself
        if status != "ok":
            status += _last_words(scratch)
    if status != "ok":
        mark_unfinished_tests(nb, status)
    too_long = f"the cell ran longer than {limits.cell_seconds} s and was interrupted"
    for index in client.timed_out:
        nb.cells[index].outputs = [o for o in nb.cells[index].outputs if o.get("output_type") != "error"]
        nb.cells[index].outputs.append(nbformat.v4.new_output("error", ename="CellTimeoutError", evalue=too_long,
                                                              traceback=[f"CellTimeoutError: {too_long}"]))
    if status == "ok" and client.timed_out:
        status = f"ok, but cell {', '.join(str(i + 1) for i in client.timed_out)} ran longer than {limits.cell_seconds} s and was interrupted"
    truncated = [i for i, cell in enumerate(nb.cells) if any(o.get("name") == "truncated" for o in cell.get("outputs", []))]
    if truncated:
        status += f"; output of cell {', '.join(str(i + 1) for i in truncated)} cut at {limits.output_bytes:,} bytes"
    return status


async def execute_with_harvest(nb, assignment: str, source_nb, zygote, limits: Limits, files_from: str | None = None,
                               seed: int | None = None, side_by_side: bool = False) -> str:
    """Run the student's notebook (its outputs make the feedback) and the harvest notebook built
    from its accepted code in a fresh kernel of its own (its outputs make the verdicts); the
    student's notebook's status. Here, not in ``nbgrader_plugin``, so that self-grading runs the
    same way without nbgrader (Colab). ``seed``: of the harvest's inputs (None: drawn now).
    ``side_by_side``: both kernels at once (neither needs the other's outputs, and a kernel's start
    is mostly waiting), for a class; one after the other, 60 to 100 MiB less at the peak
    (``benchmarks/platform_footprint.py``), for one notebook in a small container (Gradescope's)."""
    from attention_course.grading.verdicts.judge import harvest_notebook, keep_harvest

    harvest_nb, left_out = harvest_notebook(nb, assignment, source_nb, seed)
    student = execute_notebook(nb, zygote, limits, files_from=files_from)
    harvest = execute_notebook(harvest_nb, zygote, limits, clean=True)
    if side_by_side:
        status, _ = await asyncio.gather(student, harvest)
    else:
        status = await student
        await harvest
    keep_harvest(nb, harvest_nb, left_out)
    return status
