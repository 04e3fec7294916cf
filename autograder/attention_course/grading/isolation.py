"""Linux namespaces for a student's kernel (the grader must be root): what it can see and touch.

In the kernel's forked process, before any student code runs, ``isolate`` gives it
- a network namespace of its own: no network (it talks to the grader over Unix sockets in its folder);
- a PID namespace, in which it is process 1: it cannot signal the grader or other kernels, and
  when it ends every process it started ends with it (no child changes files afterwards);
- a mount namespace in which the whole file system is read-only except its own folder, the grader's
  paths (hidden tests, submissions, gradebook, feedback, executed copies) are empty, and the folder
  that holds the other kernels' folders shows only its own;
and ``drop_privileges`` then takes away every capability (when it stays root: without
CAP_SYS_ADMIN it cannot undo the mounts; with a user of its own it has none anyway).
"""

import ctypes
import os
import signal

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, options: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(kind), flags, encode(options)), f"mount {target}")


def isolate(folder: str, hidden: list[str]) -> None:
    """Called in the kernel's process; returns in a child that is process 1 of a new PID namespace
    (this process waits for it and exits with it, so that the grader's signals reach both)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    child = os.fork()
    if child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, which shares the process group
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # killed with the waiting parent
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this namespace's processes only
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1g")
    empty = os.path.join(folder, ".hidden")  # what a hidden file shows: nothing, read-only
    os.close(os.open(empty, os.O_CREAT | os.O_WRONLY, 0o444))
    for path in hidden:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        elif os.path.exists(path):
            _mount(empty, path, None, MS_BIND)
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    # The folder holding every kernel's folder shows this kernel's only, bound back by a handle.
    handle = os.open(folder, os.O_PATH)
    parent = os.path.dirname(folder)
    _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    os.mkdir(folder, 0o700)
    _mount(f"/proc/self/fd/{handle}", folder, None, MS_BIND)
    os.close(handle)
    _mount(None, parent, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def isolation_possible() -> bool:
    """Whether this machine lets the grader isolate kernels: tried once, in a throwaway process."""
    if os.getuid() != 0:
        return False
    probe = "from attention_course.grading.isolation import _probe; _probe()"
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=False).returncode == 0


def _probe() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as parent, tempfile.TemporaryDirectory() as hidden:
        folder = os.path.join(parent, "kernel")
        os.mkdir(folder)
        open(os.path.join(hidden, "secret"), "w").close()
        child = os.fork()
        if child == 0:
            try:
                isolate(folder, [hidden])
                drop_privileges()
                open(os.path.join(folder, "written"), "w").close()
                os._exit(0 if not os.listdir(hidden) else 1)
            except BaseException:  # noqa: BLE001 - any failure means: not possible here
                os._exit(1)
        _, status = os.waitpid(child, 0)
        raise SystemExit(0 if status == 0 and os.path.exists(os.path.join(folder, "written")) else 1)


def drop_privileges() -> None:
    """No capability left, and none to be gained by executing a program."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no new privileges")
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
