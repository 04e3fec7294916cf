"""A sandbox for a student's kernel, built by bubblewrap (``bwrap``, Debian's and Fedora's
packaged tool behind Flatpak): what it can see and touch.

``sandbox_command`` is the ``bwrap`` command line that runs a kernel with
- a network namespace of its own: no network (it talks to the grader over Unix sockets in its folder);
- a PID namespace, whose process 1 is bwrap's own: the kernel cannot signal the grader or other
  kernels, and when it ends every process it started ends with it (no child changes files
  afterwards); the sandbox also dies with the grader (``--die-with-parent``);
- a file system of its own, made of an allow-list (``visible_paths``): the Python it runs and the
  system's libraries, read-only; its own folder, writable; a private /tmp, /dev (/dev/shm) and /proc.
  Nothing else of the grader's machine is there: no course directory (hidden tests, submissions,
  gradebook), no other copy of the course, no home directory, no other kernel's folder;
- no capabilities (``--cap-drop ALL``, and bwrap sets no_new_privs): in a user namespace of its own
  where the machine allows unprivileged ones (then the grader need not be root), else (root
  without user namespaces) as a root without any capability.

A kernel enters it one of two ways (``execute.SANDBOX``): forked from the zygote (torch already
imported), it joins the namespaces of a placeholder that bwrap started in the sandbox (``join``:
setns(2), then ``drop_privileges``), which takes 0.56 s for a start, a cell importing torch and
transformers, and a shutdown; or bwrap execs a fresh Python (2.7 s: it imports everything again).
"""

import functools
import os
import shutil
import subprocess
import sys

# What a kernel sees of the system besides Python: libraries, programs, and the few files of /etc
# that they read (the dynamic linker's cache, users and groups, time zone, fonts, certificates).
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/sys", "/etc/ld.so.cache", "/etc/ld.so.conf",
                "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts",
                "/etc/localtime", "/etc/fonts", "/etc/ssl", "/etc/mime.types")
# Besides bwrap's own /dev (null, zero, full, random, urandom, tty, a private shm): a GPU's devices.
DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


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


def bwrap() -> str | None:
    """The bubblewrap program, where it is installed."""
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def sandbox_command(folder: str, visible: list[str], hidden: tuple[str, ...] = (), user_namespace: bool = True) -> list[str]:
    """The ``bwrap`` arguments that run a command with ``visible`` (read-only) and ``folder``
    (writable, the working directory) as all of its file system. ``hidden`` folders inside the
    visible ones are covered by an empty, read-only one (the course package, where it is installed in
    site-packages, for the harvest kernel). Append the command."""
    program = bwrap()
    if program is None:
        raise FileNotFoundError("bubblewrap (bwrap) is not installed")
    command = [program, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--cap-drop", "ALL"]
    if user_namespace:
        command += ["--unshare-user", "--disable-userns"]
    # Private /tmp, /dev and /proc first: a visible path or the folder may lie below /tmp.
    command += ["--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]
    for path in visible:
        if os.path.islink(path) and os.path.dirname(path) == "/":
            command += ["--symlink", os.readlink(path), path]  # /bin -> usr/bin on a merged /usr
        elif os.path.exists(path):
            command += ["--ro-bind", path, path]
    for device in DEVICES + tuple(sorted(p for p in _listdir("/dev") if p.startswith("/dev/nvidia") and p[11:].isdigit())):
        if os.path.exists(device):
            command += ["--dev-bind", device, device]
    for path in hidden:
        if any(path == v or path.startswith(v.rstrip("/") + "/") for v in visible) and os.path.isdir(path):
            command += ["--perms", "0555", "--size", "4096", "--tmpfs", path, "--remount-ro", path]
    # Its own folder, writable; the rest of its root (bwrap builds it on a tmpfs), read-only.
    command += ["--bind", folder, folder, "--remount-ro", "/", "--chdir", folder, "--"]
    return command


def _listdir(folder: str) -> list[str]:
    try:
        return [os.path.join(folder, name) for name in os.listdir(folder)]
    except OSError:
        return []


_PROBE = """
import os, socket, sys
folder, hidden = sys.argv[1:3]
open(os.path.join(folder, "written"), "w").close()
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    sys.exit("network")
except OSError:
    pass
sys.exit("hidden folder visible" if os.path.exists(hidden) else 0)
"""


@functools.lru_cache(maxsize=None)
def sandbox_mode() -> str | None:
    """How this machine lets the grader confine kernels, tried once, in a throwaway sandbox:
    "user" (bwrap in a user namespace of its own: any user, where unprivileged user namespaces are
    allowed), "root" (bwrap as root, without user namespaces), or None (no bwrap, or it cannot run)."""
    import tempfile

    if sys.platform != "linux" or bwrap() is None:
        return None
    for user_namespace in (True, False):
        if not user_namespace and os.getuid() != 0:
            break
        with tempfile.TemporaryDirectory() as parent, tempfile.TemporaryDirectory() as hidden:
            folder = os.path.join(parent, "kernel")
            os.mkdir(folder)
            command = [*sandbox_command(folder, visible_paths(), user_namespace=user_namespace), sys.executable, "-c",
                       _PROBE, folder, hidden]
            try:
                done = subprocess.run(command, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0 and os.path.exists(os.path.join(folder, "written")):
                return "user" if user_namespace else "root"
    return None


def isolation_possible() -> bool:
    """Whether this machine lets the grader confine kernels (bubblewrap, see ``sandbox_mode``)."""
    return sandbox_mode() is not None


# Entering a sandbox that bwrap made: a kernel forked from the zygote (torch already imported)
# joins the namespaces of a placeholder process that bwrap started in them (``join``), instead of
# being a fresh Python that imports everything again. bwrap builds the namespaces and the file
# system; what is done here by hand is only setns(2), and dropping the capabilities that joining
# a user namespace gives.
import ctypes  # noqa: E402
import signal  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
NS_GET_PARENT = 0xB702
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def placeholder_command(folder: str, visible: list[str], hidden: tuple[str, ...], user_namespace: bool, info_fd: int) -> list[str]:
    """bwrap running a placeholder in the sandbox, the pid of which it writes as JSON ({"child-pid":
    ...}) to ``info_fd``; the placeholder prints "ready" once the sandbox is complete (bwrap writes the
    pid before it has made all of it), then sleeps until it is killed."""
    command = sandbox_command(folder, visible, hidden, user_namespace)
    return [command[0], "--info-fd", str(info_fd), *command[1:], "/bin/sh", "-c", "echo ready && exec sleep infinity"]


def join(pid: int, user_namespace: bool) -> None:
    """Called in a kernel's forked process: enter the namespaces of ``pid`` (a placeholder in a
    bwrap sandbox); returns in a child that lives in its PID namespace (this process waits for it
    and exits with it, so that the grader's signals reach both), its root and working folder the
    sandbox's. Every file descriptor but 0, 1 and 2 is closed first: none leads outside."""
    kinds = [("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET), ("pid", CLONE_NEWPID), ("mnt", CLONE_NEWNS)]
    handles = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind) for name, kind in kinds]
    if user_namespace:
        # bwrap's --disable-userns puts the sandbox in a second user namespace, inside the one that
        # owns the other namespaces: that one first (for the right to join them), that second one last.
        inner = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        outer = _libc.ioctl(inner, NS_GET_PARENT)
        if outer < 0:
            _check(-1, "the user namespace's parent")
        handles = [(outer, CLONE_NEWUSER), *handles, (inner, CLONE_NEWUSER)]
    for handle, kind in handles:
        _check(_libc.setns(handle, kind), f"setns {kind:#x}")
        os.close(handle)
    os.closerange(3, 65536)
    child = os.fork()
    if child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, which shares the process group
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # killed with the waiting parent


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges() -> None:
    """No capability left, and none to be gained by executing a program."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no new privileges")
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
