"""What a Gradescope autograder run of the course costs: memory and time of the whole run, measured on
the entry point itself.

For each assignment it builds the autograder zip (``attention-course package gradescope``), lays out a
folder as Gradescope does (``autograder/source`` the unpacked zip, ``autograder/submission`` an
example student's notebook, ``autograder/results``), runs ``run_autograder`` there with this Python
(setup.sh's install left out: this environment has the package), and samples the whole process tree
(run_autograder, the grader, the zygote, every kernel) every ``--interval`` seconds from /proc:

- peak PSS: the largest sum over the tree of each process's proportional set size (a page shared by n
  processes counts 1/n in each: kernels forked from the zygote share its torch), the figure to hold
  against a container's memory limit (Gradescope's default: 768 MB). File pages that the kernel can
  drop (the page cache) are not in it;
- peak RSS sum: the same sum with shared pages counted in every process (an upper bound);
- largest process: ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the largest resident set of any one process;
- largest kernel address space: the virtual size the zygote or a kernel forked from it reaches, what a
  limit of address space (``Limits.memory_bytes``, RLIMIT_AS) must leave room for;
- wall seconds here, and CPU seconds of the tree (user + system): with half a CPU (Gradescope's default)
  a run takes at least twice its CPU seconds.

    python benchmarks/platform_footprint.py [--assignments 01_causal_attention 04_gqa] [--student solution]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat

from attention_course.grading.course import find_course_root, release_notebook, source_notebook
from attention_course.grading.examples import build_submission, students_of
from attention_course.grading.platforms.build import package_gradescope
from attention_course.grading.platforms.run import GRADESCOPE_ENV


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _sample(pid: int) -> tuple[int, int, int]:
    """(PSS sum, RSS sum, the largest virtual size of the zygote or a kernel forked from it) over ``pid``'s
    tree, in bytes."""
    pss = rss = largest_vsz = 0
    for process in _descendants(pid):
        try:
            with open(f"/proc/{process}/smaps_rollup") as rollup:
                fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rollup if line.split(":")[0] in ("Pss", "Rss")}
            with open(f"/proc/{process}/stat") as stat:
                vsz = int(stat.read().rsplit(")", 1)[1].split()[20])
            with open(f"/proc/{process}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # ended between the listing and the reading
        pss += fields.get("Pss", 0)
        rss += fields.get("Rss", 0)
        if "grading.zygote" in command:  # the zygote and the kernels forked from it
            largest_vsz = max(largest_vsz, vsz)
    return pss, rss, largest_vsz


def measure(root: Path, assignment: str, student: str, interval: float, work: Path) -> dict:
    base = work / assignment / "autograder"
    package_gradescope(root, assignment, work / f"{assignment}.zip")
    with zipfile.ZipFile(work / f"{assignment}.zip") as archive:
        archive.extractall(base / "source")
    for script in ("setup.sh", "run_autograder"):
        (base / "source" / script).chmod(0o755)  # zipfile keeps no modes on extraction
    shutil.copy(base / "source" / "run_autograder", base / "run_autograder")  # as Gradescope copies it
    (base / "submission").mkdir()
    (base / "results").mkdir()
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    chosen = next(s for s in students_of(assignment) if s.name == student)
    nbformat.write(build_submission(chosen, source, nbformat.read(release_notebook(root, assignment), as_version=4)),
                   base / "submission" / f"Copy of {source_notebook(root, assignment).name}")

    env = dict(os.environ, **{GRADESCOPE_ENV: str(base), "ATTENTION_COURSE_PYTHON": sys.executable})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen([str(base / "run_autograder")], cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_pss = peak_rss = peak_vsz = 0
    while process.poll() is None:
        pss, rss, vsz = _sample(process.pid)
        peak_pss, peak_rss, peak_vsz = max(peak_pss, pss), max(peak_rss, rss), max(peak_vsz, vsz)
        time.sleep(interval)
    log = process.stdout.read().decode()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = json.loads((base / "results" / "results.json").read_text())
    return {
        "assignment": assignment, "student": student, "exit": process.returncode,
        "score": f"{results['score']:g} / {sum(t['max_score'] for t in results['tests']):g}",
        "wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_pss_mib": peak_pss / 2**20, "peak_rss_sum_mib": peak_rss / 2**20,
        "largest_process_mib": after.ru_maxrss / 1024,  # kilobytes on Linux
        "largest_kernel_vsz_mib": peak_vsz / 2**20, "log": log,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", nargs="+", default=["01_causal_attention", "04_gqa"])
    parser.add_argument("--student", default="solution", help="an example student (grading/examples)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    args = parser.parse_args()
    root = find_course_root()
    print(f"{'assignment':<22} {'score':>9} {'wall s':>7} {'CPU s':>6} {'>= s at 0.5 CPU':>15} {'peak PSS MiB':>12} "
          f"{'RSS sum MiB':>11} {'largest MiB':>11} {'kernel VSZ MiB':>14}")
    for assignment in args.assignments:
        with tempfile.TemporaryDirectory(prefix="platform-footprint-") as work:
            row = measure(root, assignment, args.student, args.interval, Path(work))
        if row["exit"] != 0:
            print(row["log"])
        print(f"{row['assignment']:<22} {row['score']:>9} {row['wall_s']:>7.1f} {row['cpu_s']:>6.1f} {2 * row['cpu_s']:>15.1f} "
              f"{row['peak_pss_mib']:>12.0f} {row['peak_rss_sum_mib']:>11.0f} {row['largest_process_mib']:>11.0f} "
              f"{row['largest_kernel_vsz_mib']:>14.0f}")


if __name__ == "__main__":
    main()
