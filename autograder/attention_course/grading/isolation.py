"""Linux namespaces for a student's kernel (the grader must be root): what it can see and touch.

In the kernel's forked process, before any student code runs, ``isolate`` gives it
- a network namespace of its own: no network (it talks to the grader over Unix sockets in its folder);
- a PID namespace, in which it is process 1: it cannot signal the grader or other kernels, and
  when it ends every process it started ends with it (no child changes files afterwards);
- a file system of its own, made of an allow-list (``visible_paths``): the Python it runs and the
  system's libraries, read-only; its own folder, writable; a private /tmp, /dev/shm and /proc.
  Nothing else of the grader's machine is there: no course directory (hidden tests, submissions,
  gradebook), no other copy of the course, no home directory, no other kernel's folder;
and ``drop_privileges`` then takes away every capability (when it stays root: without
CAP_SYS_ADMIN and CAP_SYS_CHROOT it cannot undo the mounts or leave its root; with a user of its own
it has none anyway).
"""

import ctypes
import glob
import os
import signal
import sys

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


# What a kernel sees of the system besides Python: libraries, programs, and the few files of /etc
# that they read (the dynamic linker's cache, users and groups, time zone, fonts, certificates).
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/sys", "/etc/ld.so.cache", "/etc/ld.so.conf",
                "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts",
                "/etc/localtime", "/etc/fonts", "/etc/ssl", "/etc/mime.types")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/nvidiactl", "/dev/nvidia-uvm",
           "/dev/nvidia-uvm-tools")


def package_folder() -> str:
    """The course package's own folder (``.../attention_course``)."""
    import attention_course

    return os.path.realpath(os.path.dirname(attention_course.__file__))


def visible_paths(with_package: bool = True) -> list[str]:
    """The read-only part of a kernel's file system: the system's, and this Python's (its prefixes,
    its site-packages, and, unless ``with_package`` is False, the folder holding the course package).
    Not the grader's working folder, which is on ``sys.path`` too when it started Python there."""
    import site

    python = {sys.base_prefix, sys.prefix} | ({os.path.dirname(package_folder())} if with_package else set())
    python |= {path for path in [*site.getsitepackages(), site.getusersitepackages()] if path in sys.path and os.path.isdir(path)}
    return [*SYSTEM_PATHS, *sorted(os.path.realpath(path) for path in python)]


def _show(path: str, root: str, writable: bool = False) -> None:
    """Bind ``path`` at the same place under ``root`` (a link is copied as a link)."""
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(path) and os.path.dirname(path) == "/":
        os.symlink(os.readlink(path), target)  # /bin -> usr/bin on a merged /usr
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(path, target, None, MS_BIND)
    if not writable:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def isolate(folder: str, visible: list[str], root: str, hidden: tuple[str, ...] = ()) -> None:
    """Called in the kernel's process; returns in a child that is process 1 of a new PID namespace
    (this process waits for it and exits with it, so that the grader's signals reach both), with
    ``visible`` (read-only) and ``folder`` (writable) as all of its file system, built on the empty
    folder ``root`` (each kernel's mounts are its own: one such folder serves every kernel).
    ``hidden`` folders inside the visible ones are covered by an empty one (the course package,
    where it is installed in site-packages, for the harvest kernel)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    child = os.fork()
    if child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, which shares the process group
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # killed with the waiting parent
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    # Private /tmp and /dev/shm first: a visible path or the folder may lie below /tmp.
    for place, kind, options in (("/proc", "proc", None), ("/tmp", "tmpfs", "size=1g,mode=1777"),
                                 ("/dev/shm", "tmpfs", "size=1g,mode=1777")):
        os.makedirs(root + place, exist_ok=True)
        _mount(kind, root + place, kind, MS_NOSUID | MS_NODEV | (MS_NOEXEC if kind == "proc" else 0), options)
    for path in visible:
        if os.path.lexists(path):
            _show(path, root)
    for device in DEVICES + tuple(glob.glob("/dev/nvidia[0-9]*")):
        if os.path.exists(device):
            _show(device, root, writable=True)
    for path in hidden:
        if os.path.isdir(root + path):
            _mount("tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
    _show(folder, root, writable=True)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    os.chroot(".")
    os.chdir("/")


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

    with tempfile.TemporaryDirectory() as parent, tempfile.TemporaryDirectory() as hidden, tempfile.TemporaryDirectory() as root:
        folder = os.path.join(parent, "kernel")
        os.mkdir(folder)
        open(os.path.join(hidden, "secret"), "w").close()
        child = os.fork()
        if child == 0:
            try:
                isolate(folder, visible_paths(), root)
                drop_privileges()
                open(os.path.join(folder, "written"), "w").close()
                os._exit(0 if not os.path.exists(hidden) else 1)
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
