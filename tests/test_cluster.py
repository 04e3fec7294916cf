"""Grading on a Dask cluster (a real LocalCluster of 2 worker processes): the grades are the local
pool's, and a worker process killed in the middle of the class loses nothing: every student graded
once, every file there."""

import os
import signal
import threading
import time

import nbformat
import pytest

from attention_course.grading.course import ASSIGNMENTS, release_notebook, source_notebook
from attention_course.grading.examples import build_submission, students_of
from class_fixtures import ASSIGNMENT
from course_copy import ROOT, copy_course

pytestmark = pytest.mark.nbgrader
NOTEBOOK = ASSIGNMENTS[ASSIGNMENT]


def _hand_in(folder, n: int):
    source = nbformat.read(source_notebook(ROOT, ASSIGNMENT), as_version=4)
    release = nbformat.read(release_notebook(ROOT, ASSIGNMENT), as_version=4)
    examples = students_of(ASSIGNMENT)
    for i in range(n):
        (folder / f"s{i:02d}").mkdir(parents=True)
        nbformat.write(build_submission(examples[i % len(examples)], source, release), folder / f"s{i:02d}" / f"Copy of {NOTEBOOK}")
    return folder


def _grades(result):
    return {r.student: (r.score, sorted(r.lost)) for r in result.students}


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    return _hand_in(tmp_path_factory.mktemp("lms") / "download", 8)


@pytest.fixture(scope="module")
def pool_grades(class_folder, tmp_path_factory):
    from attention_course.grading.class_grading import grade_class

    return _grades(grade_class(copy_course(tmp_path_factory.mktemp("pool")), ASSIGNMENT, class_folder, workers=2))


def test_a_local_cluster_gives_the_local_pools_grades(class_folder, pool_grades, tmp_path):
    from attention_course.grading.class_grading import grade_class

    result = grade_class(copy_course(tmp_path / "course"), ASSIGNMENT, class_folder, scheduler="local:2")
    assert _grades(result) == pool_grades
    assert {r.status for r in result.students} == {"ok"}


def _workers(kind: str):
    if kind == "local cluster":
        from attention_course.grading.cluster import DaskWorkers

        return DaskWorkers("local:2")
    from attention_course.grading.workers import LocalPool

    return LocalPool(2)


@pytest.mark.parametrize("kind", ["local cluster", "local pool"])
def test_a_worker_killed_mid_class_loses_no_student_and_no_file(kind, class_folder, pool_grades, tmp_path):
    from nbgrader.api import Gradebook

    from attention_course.grading.class_grading import grade_class

    course = copy_course(tmp_path / "course")
    outcomes = course / ".grading" / ASSIGNMENT / "outcomes"
    workers = _workers(kind)
    killed = []

    def kill_one_when_the_first_is_done():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (outcomes.is_dir() and any(outcomes.glob("*.json"))):
            time.sleep(0.2)
        pid = workers.worker_processes()[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(len(list(outcomes.glob("*.json"))))  # outcomes there when it died

    killer = threading.Thread(target=kill_one_when_the_first_is_done)
    killer.start()
    try:
        result = grade_class(course, ASSIGNMENT, class_folder, run_on=workers)
    finally:
        killer.join()
        workers.close()
    assert killed and killed[0] < len(pool_grades), f"the worker was killed after the class was done: {killed}"
    assert _grades(result) == pool_grades  # every student, graded as the pool grades them
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert sorted(s.student.id for s in gradebook.assignment_submissions(ASSIGNMENT)) == sorted(pool_grades)  # once each
    for student in pool_grades:
        assert (course / "autograded" / student / ASSIGNMENT / NOTEBOOK).is_file(), student
        assert (course / "feedback" / student / ASSIGNMENT / NOTEBOOK.replace(".ipynb", ".html")).is_file(), student
        assert (outcomes / f"{student}.json").is_file(), student


def test_the_pools_zygote_outlives_workers_that_die_in_the_middle_of_a_request(tmp_path):
    """A local pool's workers share one zygote: a worker killed between asking for a kernel and reading the answer
    (here: a connection closed at once) loses its connection, and the zygote goes on serving the others."""
    import json
    import socket

    from attention_course.grading.zygote import Zygote, ZygoteClient

    address = str(tmp_path / "socket")
    request = {"argv": ["-f", "none"], "cwd": str(tmp_path / "no such folder"), "env": {}, "memory_bytes": None,
               "uid": None, "threads": None, "clean": False, "join": None}  # a kernel that ends at once
    with Zygote(address), ZygoteClient(address) as survivor:
        survivor.spawn(**request)  # connected, and the zygote's imports done
        for _ in range(3):
            dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            dying.connect(address)
            dying.sendall(json.dumps(request).encode() + b"\n")
            dying.close()
        time.sleep(0.5)
        assert survivor.spawn(**request) > 0
