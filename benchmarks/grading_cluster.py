"""The grade command on a Dask cluster against its local pool, on the same class, on the same machine,
in one run: for each number of workers, the class graded by a pool of that many processes here and
by a ``LocalCluster`` of that many worker processes (what ``--scheduler local:N`` starts); the
cluster's overhead per notebook as a ratio, how throughput grows with workers, and notebooks per
worker-hour (what sizes a cluster: see the README). Every grading must give every student the same score.

    python benchmarks/grading_cluster.py --students 30 --workers 1 2 [--assignment 01_causal_attention]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from grading_throughput import make_class

from attention_course.grading.course import copy_course, find_course_root


def _graded(root: Path, assignment: str, folder: Path, scratch: Path, **where) -> tuple[float, dict[str, float]]:
    from attention_course.grading.class_grading import grade_class  # here: the workers import the main module

    course = copy_course(root, scratch / f"course-{len(list(scratch.iterdir()))}")
    started = time.perf_counter()
    result = grade_class(course, assignment, folder, **where)
    return time.perf_counter() - started, {r.student: r.score for r in result.students}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--assignment", default="01_causal_attention")
    args = parser.parse_args()
    root = find_course_root(Path(__file__).resolve().parent)
    n = args.students
    print(f"{os.cpu_count()} cores; {n} students of {args.assignment}")
    print(f"{'workers':>7} {'pool s/nb':>9} {'cluster s/nb':>12} {'cluster/pool':>12} {'pool nb per worker-hour':>23} "
          f"{'cluster nb per worker-hour':>26} {'pool speed-up':>13}")  # speed-up: over the first count
    first = None
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_class(root, args.assignment, n, scratch / "class")
        (scratch / "courses").mkdir()
        scores = None
        for workers in args.workers:
            pool, pool_scores = _graded(root, args.assignment, scratch / "class", scratch / "courses", workers=workers, scheduler="")
            cluster, cluster_scores = _graded(root, args.assignment, scratch / "class", scratch / "courses",
                                              scheduler=f"local:{workers}")
            scores = scores or pool_scores
            assert pool_scores == cluster_scores == scores, "the gradings disagree"
            first = first or pool  # the pool at the first number of workers
            print(f"{workers:>7} {pool / n:>9.2f} {cluster / n:>12.2f} {cluster / pool:>11.2f}x {3600 * n / (pool * workers):>23.0f} "
                  f"{3600 * n / (cluster * workers):>26.0f} {first / pool:>12.2f}x", flush=True)
    print("(scores identical)")


if __name__ == "__main__":
    main()
