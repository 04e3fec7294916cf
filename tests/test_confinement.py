"""Confinement, checked from inside a kernel: no network, none of the grader's files (its home, its
working folder, a secret beside them), nothing on the file system but the allow-list, nothing
writable but the kernel's own folder (and its private /tmp and /dev/shm), none of the grader's
processes, no capabilities; and for the harvest kernel (``clean=True``) no course package folder.

Where kernels cannot be confined here (no bubblewrap, or it cannot make namespaces) these tests
skip, saying why, except under CI (the ``CI`` environment variable set, as ``.ci/run`` does): CI
must say that confinement was tested, so there they fail instead."""

import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import uuid
from dataclasses import replace

import nbformat
import pytest

from attention_course.grading.execute import UID_COUNTER, execute_notebook, kernel_uid
from attention_course.grading.isolation import bwrap, package_folder, sandbox_mode, visible_paths
from attention_course.grading.limits import Limits, confined, separate_users_possible
from attention_course.grading.zygote import Zygote, ZygoteClient

pytestmark = pytest.mark.confinement

PROBE = r"""
import json, os, socket, sys
given = json.loads(GIVEN)
seen = {}
def _connects(address):
    try:
        socket.create_connection(address, timeout=3).close()
        return True
    except OSError:
        return False
seen["network"] = {f"{host}:{port}": _connects((host, port)) for host, port in given["addresses"]}
seen["interfaces"] = sorted(name for _, name in socket.if_nameindex())
seen["grader's paths"] = {path: sorted(os.listdir(path)) if os.path.isdir(path) else os.path.exists(path) or None
                          for path in given["grader's paths"]}
seen["top level"] = sorted(os.listdir("/"))
seen["etc"] = sorted(os.listdir("/etc")) if os.path.isdir("/etc") else []
def _writable(path):
    probe = os.path.join(path, ".confinement-probe")
    try:
        with open(probe, "w") as out:
            out.write("x")
    except OSError:
        return False
    os.remove(probe)
    return True
seen["writable"] = {path: _writable(path) for path in given["read-only"] if os.path.isdir(path)}
seen["own folder writable"] = _writable(os.getcwd())
for private in ("/tmp", "/dev/shm"):
    with open(os.path.join(private, given["marker"]), "w") as out:
        out.write("written in the kernel")
pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
seen["pid"], seen["processes"] = os.getpid(), pids
try:
    os.kill(given["grader"], 0)
    seen["can signal the grader"] = True
except OSError:
    seen["can signal the grader"] = False
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
seen["capabilities"] = {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
seen["no new privileges"] = status.get("NoNewPrivs", "").strip() == "1"
seen["uid"] = os.getuid()
seen["cwd"] = os.getcwd()
seen["open files"] = sorted({os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.islink(f"/proc/self/fd/{fd}")})
seen["package folder"] = os.listdir(given["package"]) if os.path.isdir(given["package"]) else None
try:
    import attention_course.models
    seen["package importable"] = True
except ImportError:
    seen["package importable"] = False
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def limits():
    limits, notes = confined(Limits())
    if not limits.isolate:
        why = (f"kernels cannot be confined on this machine: {'; '.join(notes)} (bubblewrap: {bwrap() or 'not installed'}; "
               "install it, e.g. apt-get install bubblewrap, and allow user namespaces or run as root)")
        if os.environ.get("CI"):
            pytest.fail(f"CI must test confinement, but {why}")
        pytest.skip(why)
    print(f"\nkernels confined by bubblewrap ({bwrap()}), mode: {sandbox_mode()}, "
          f"{'a user of its own from ' + str(limits.first_uid) if limits.first_uid is not None else 'the grader uid, no capabilities'}")
    return limits


@pytest.fixture(scope="module")
def grader_secrets(tmp_path_factory):
    """A secret of the grader's, beside the kernels (a test's temporary folder), and a server
    listening on the grader's loopback."""
    secret = tmp_path_factory.mktemp("grader") / "answer_keys.txt"
    secret.write_text("the answers")
    server = socket.create_server(("127.0.0.1", 0))
    yield secret, server
    server.close()


def _probe(limits, grader_secrets, clean: bool, sandbox: str) -> tuple[dict, str]:
    secret, server = grader_secrets
    marker = f"confinement-marker-{uuid.uuid4().hex}"
    read_only = sorted({*visible_paths(), package_folder(), sys.prefix, "/usr", "/etc", "/"})
    given = {
        "addresses": [("127.0.0.1", server.getsockname()[1]), ("1.1.1.1", 53), ("8.8.8.8", 443)],
        "grader's paths": [str(secret), str(secret.parent), os.path.expanduser("~"), os.getcwd(), "/work", "/root"],
        "read-only": read_only,
        "marker": marker,
        "grader": os.getpid(),
        "package": package_folder(),
    }
    source = PROBE.replace("GIVEN", repr(json.dumps(given)))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    import attention_course.grading.execute as execute

    before, execute.SANDBOX = execute.SANDBOX, sandbox
    try:
        with Zygote() as zygote:
            status = asyncio.run(execute_notebook(nb, zygote, limits, clean=clean))
    finally:
        execute.SANDBOX = before
    assert status == "ok", (status, nb.cells[0].outputs)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    assert printed, nb.cells[0].outputs
    return json.loads(printed.strip().splitlines()[-1]), marker


# Both ways a confined kernel starts (``execute.SANDBOX``): forked into a sandbox bwrap made, a fresh Python in bwrap.
@pytest.fixture(scope="module", params=["fork", "fresh"])
def sandbox(request):
    return request.param


@pytest.fixture(scope="module")
def student(limits, grader_secrets, sandbox):
    return _probe(limits, grader_secrets, clean=False, sandbox=sandbox)


@pytest.fixture(scope="module")
def harvest(limits, grader_secrets, sandbox):
    return _probe(limits, grader_secrets, clean=True, sandbox=sandbox)


def test_no_network(student):
    seen, _ = student
    assert seen["network"] == {"127.0.0.1:" + k.split(":")[1]: False for k in seen["network"] if k.startswith("127.")} | {
        "1.1.1.1:53": False, "8.8.8.8:443": False}
    assert seen["interfaces"] == ["lo"]


def _on_the_way(folder: str, visible: list[str]) -> set[str]:
    """What of ``folder`` a kernel sees: the entries on the way to an allow-listed path below it."""
    return {path[len(folder.rstrip("/")) + 1:].split("/")[0] for path in visible if path.startswith(folder.rstrip("/") + "/")}


@pytest.mark.parametrize("kernel", ["student", "harvest"])
def test_none_of_the_graders_files(kernel, sandbox, request):
    seen, _ = request.getfixturevalue(kernel)
    visible = visible_paths(with_package=kernel == "student")
    secret, folder, *others = seen["grader's paths"]
    assert seen["grader's paths"][secret] is None and seen["grader's paths"][folder] is None  # beside the kernels' folders
    for path in others:  # the grader's home and working folder: only what leads to the Python it runs
        listing = seen["grader's paths"][path]
        assert listing is None or set(listing) <= _on_the_way(path, visible), (path, listing)


def test_only_the_allow_list_is_there(student):
    seen, _ = student
    allowed_top = {path.split("/")[1] for path in visible_paths()} | {"tmp", "dev", "proc"}
    assert set(seen["top level"]) <= allowed_top, set(seen["top level"]) - allowed_top
    allowed_etc = {path.split("/")[2] for path in visible_paths() if path.startswith("/etc/")}
    assert set(seen["etc"]) <= allowed_etc, set(seen["etc"]) - allowed_etc


def test_nothing_writable_but_its_folder_and_private_tmp(student):
    seen, marker = student
    assert seen["own folder writable"]
    assert seen["writable"] == {path: False for path in seen["writable"]}
    assert len(seen["writable"]) >= 3
    for private in ("/tmp", "/dev/shm"):  # the kernel's own: the grader's are untouched
        assert not os.path.exists(os.path.join(private, marker))


def test_none_of_the_graders_processes_and_no_capabilities(student):
    seen, _ = student
    # bwrap's process 1, the placeholder a forked kernel joins (or none: a fresh Python is process 2), the kernel
    assert seen["pid"] <= 3 and len(seen["processes"]) <= 3, seen["processes"]
    assert not seen["can signal the grader"]
    assert seen["capabilities"] == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}
    assert seen["no new privileges"]


def test_no_open_file_leads_outside(student):
    """A forked kernel keeps none of the zygote's files open (a folder left open would lead out)."""
    seen, _ = student
    outside = [target for target in seen["open files"] if target.startswith("/") and not
               target.startswith((seen["cwd"] + "/", "/dev/", "/proc/", "/tmp/")) and target != seen["cwd"]]
    assert outside == [], outside


def test_a_user_of_its_own_when_the_grader_is_root(student, limits):
    seen, _ = student
    if limits.first_uid is not None:
        assert seen["uid"] != 0 and seen["uid"] >= limits.first_uid


def test_the_student_kernel_has_the_package(student):
    seen, _ = student
    assert seen["package importable"] and seen["package folder"]


def test_the_harvest_kernel_has_no_package_folder(harvest):
    seen, _ = harvest
    assert not seen["package folder"], seen["package folder"]  # absent, or an empty folder over it
    assert not seen["package importable"]
    assert seen["network"]["1.1.1.1:53"] is False


ZYGOTE_PROBE = r"""
import json, os, socket
address, leaked = ADDRESS, []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        held = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    try:
        if held.family == socket.AF_UNIX and address in (held.getsockname(), held.getpeername() if held.type == socket.SOCK_STREAM else None):
            leaked.append(fd)
    except OSError:
        pass
    finally:
        held.close()
try:
    socket.socket(socket.AF_UNIX).connect(address)
    reachable = True
except OSError:
    reachable = False
print(json.dumps({"leaked": leaked, "reachable": reachable}))
"""


@pytest.mark.parametrize("how", ["confined", "a user of its own", "unconfined"])
def test_a_kernel_cannot_ask_the_shared_zygote_for_kernels(how, request):
    """The zygote a local pool's workers share, over a Unix socket: a kernel it forked holds none of its sockets
    (the listening one, a worker's connection), however it runs; and it cannot reach the socket: not on its file
    system (confined), or in a folder of the grader's only (a user of its own: the grader is root, kernels
    unconfined). An unconfined kernel of the grader's own user can do what the grader can: no test of reach."""
    if how == "confined":
        limits = request.getfixturevalue("limits")
    elif how == "unconfined":
        limits = replace(Limits(), isolate=False, first_uid=None)
    elif separate_users_possible():
        limits = replace(Limits(), isolate=False)
    else:
        pytest.skip("kernels run as users of their own only where the grader is root and its Python readable by all")
    folder = tempfile.mkdtemp(prefix="attention-course-zygote-")
    address = os.path.join(folder, "socket")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(ZYGOTE_PROBE.replace("ADDRESS", repr(address)))])
    try:
        with Zygote(address), ZygoteClient(address) as client:
            status = asyncio.run(execute_notebook(nb, client, limits))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert status == "ok", (status, nb.cells[0].outputs)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    seen = json.loads(printed.strip().splitlines()[-1])
    assert seen["leaked"] == []
    if how != "unconfined":
        assert seen["reachable"] is False


def _draw_uids(home: str, count: int, start, queue) -> None:
    os.environ["HOME"] = home
    from attention_course.grading.execute import kernel_uid

    start.wait()  # all at once
    queue.put([kernel_uid(61000) for _ in range(count)])


def test_kernels_started_at_once_by_many_processes_get_users_of_their_own(tmp_path):
    """Where kernels run as users of their own (the grader is root, no bubblewrap), every grading process of the
    machine draws them from one counter: 4 processes drawing 250 each at once get 1,000 different users."""
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Barrier(4)
    processes = [context.Process(target=_draw_uids, args=(str(tmp_path), 250, start, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    uids = [uid for _ in processes for uid in queue.get(timeout=120)]
    for process in processes:
        process.join()
    assert sorted(uids) == list(range(61000, 62000))


def test_the_user_counter_is_the_graders_own_file(tmp_path, monkeypatch):
    """Not a link (a kernel could point it at a file of the grader's), nor a file of another user."""
    monkeypatch.setenv("HOME", str(tmp_path))
    counter = tmp_path / UID_COUNTER
    counter.parent.mkdir(parents=True)
    target = tmp_path / "the grader's file"
    target.write_text("untouched")
    counter.symlink_to(target)
    with pytest.raises(OSError):
        kernel_uid(61000)
    assert target.read_text() == "untouched"
    counter.unlink()
    assert [kernel_uid(61000), kernel_uid(61000)] == [61000, 61001]
    if os.getuid() == 0:
        os.chown(counter, 61000, -1)
        with pytest.raises(RuntimeError, match="another user"):
            kernel_uid(61000)
