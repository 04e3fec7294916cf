"""Time of the integrity report for a class of N students of 01_causal_attention.

    python benchmarks/integrity_report.py [--students 500] [--copiers 0.1] [--seed 0]

The class is synthesized from five solutions of each answer cell (the reference and four students'
honest ones, tests/integrity_class.py): each student takes each cell from one of them at random,
renames its variables, rewrites its comments and layout and drops one line of it; a share of the
students (--copiers) copy another student's notebook and rename its variables. The time is
integrity_report's whole run: reading the cells, fingerprints, every pair, integrity.csv and
integrity.html (whose side-by-side part shows at most integrity.MAX_SHOWN pairs). Every cell of this
class is a copy of one of five solutions, so most pairs that drew the same ones for half their cells
are flagged: the count says nothing about the threshold (tests/test_integrity.py measures that).
"""

import argparse
import copy
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from attention_course.grading import integrity
from attention_course.grading.course import find_course_root

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from integrity_class import AMARA_01, BRUNO_01, CHEN_01, DANA_01, Written, reference_answers, notebook_of, recomment  # noqa: E402

ASSIGNMENT = "01_causal_attention"


def _renamed(code: str, rng: random.Random) -> str:
    """Every name bound by an assignment or a for loop (not an attribute) given a random other name."""
    bound = set(re.findall(r"^\s*([a-z_][a-z_0-9]*)\s*(?:,|=[^=])", code, flags=re.MULTILINE))
    for name in sorted(bound):
        code = re.sub(rf"(?<![.\w]){name}\b", f"{name[0]}{rng.randrange(10**6)}", code)
    return code


def _one_line_dropped(code: str, rng: random.Random) -> str:
    lines = code.splitlines()
    body = [i for i, line in enumerate(lines) if line.startswith("    ") and "return" not in line]
    if body:
        del lines[rng.choice(body)]
    return "\n".join(lines) + "\n"


def synthesized_class(n: int, copiers: float, seed: int) -> tuple[dict, dict[str, str]]:
    """({student: notebook}, {copier: the student they copied})."""
    rng = random.Random(seed)
    reference = reference_answers(ASSIGNMENT)
    bases = [{k: reference[k] for k in AMARA_01}, AMARA_01, BRUNO_01, CHEN_01, DANA_01]
    notebooks, answers, copied = {}, {}, {}
    for index in range(n):
        name = f"s{index:04d}"
        if answers and rng.random() < copiers:
            copied[name] = rng.choice(sorted(answers))
            mine = {cell: recomment(_renamed(code, rng)) for cell, code in answers[copied[name]].items()}
        else:
            mine = {cell: _one_line_dropped(recomment(_renamed(rng.choice(bases)[cell], rng)), rng) for cell in AMARA_01}
        answers[name] = mine
        notebooks[name] = notebook_of(Written(name, name, mine), ASSIGNMENT)
    return notebooks, copied


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=500)
    parser.add_argument("--copiers", type=float, default=0.1, help="share of the students who copy another's notebook")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    notebooks, copied = synthesized_class(args.students, args.copiers, args.seed)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = integrity.integrity_report(find_course_root(), ASSIGNMENT, copy.deepcopy(notebooks), Path(out))
        seconds = time.perf_counter() - started
        size = report.html_path.stat().st_size
    print(f"{args.students} students of {ASSIGNMENT}: integrity report in {seconds:.1f} s "
          f"({len(report.matches)} rows, {len(report.flagged)} pairs flagged, integrity.html {size / 1e6:.1f} MB)")
    flagged = {frozenset((m.student, m.other)) for m in report.flagged}
    print(f"copiers flagged with the student they copied: {sum(frozenset(p) in flagged for p in copied.items())} of {len(copied)}")
    print(report.summary_line())


if __name__ == "__main__":
    main()
