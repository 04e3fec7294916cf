"""What an instructor reads after grading a class: a table, pass rates, the common mistakes, a figure."""

import re
from collections import Counter
from pathlib import Path

from attention_course.grading.class_grading import ClassResult


CALL = re.compile(r"^\w+\(.*?\)(?: \[[^\]]*\])?(?:: | (?=raised ))")


def mistake_of(error: str) -> str:
    """The named mistake of a failed check, without the call that exposed it."""
    return CALL.sub("", error.removeprefix("AssertionError: "), count=1)


def render(result: ClassResult, workers: int) -> str:
    n = len(result.students)
    lines = [f"{result.assignment}: {n} students graded in {result.seconds:.1f} s "
             f"({result.seconds / max(n, 1):.1f} s per student, {workers} workers)", ""]
    width = max([len(r.student) for r in result.students] + [7])
    lines.append(f"  {'student':<{width}}  {'score':>9}  status")
    for r in result.students:
        lines.append(f"  {r.student:<{width}}  {r.score:>4g} / {r.max_score:<3g}  {r.status}")
    lines += ["", "  pass rate per item"]
    item_width = max((len(i) for i in result.items), default=4)
    for item, (passed, graded) in result.items.items():
        rate = passed / graded if graded else 0.0
        lines.append(f"  {item:<{item_width}}  {passed:>3}/{graded:<3} {rate:>4.0%}  {'█' * round(rate * 20)}")
    mistakes = Counter(mistake_of(e) for r in result.students for e in r.lost.values() if e and e != "no notebook")
    if mistakes:
        lines += ["", "  most common mistakes"]
        lines += [f"  {count:>3}x  {text[:160]}" for text, count in mistakes.most_common(8)]
    if result.integrity:
        lines += ["", f"  {result.integrity}"]
    if result.notes:
        lines += ["", "  notes on the files"] + [f"  - {note}" for note in result.notes]
    return "\n".join(lines)


def save_figure(result: ClassResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [r.score for r in result.students]
    top = max((r.max_score for r in result.students), default=1) or 1
    items = list(result.items)
    rates = [result.items[i][0] / max(result.items[i][1], 1) for i in items]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.35 * len(items) + 1.5)))
    left.hist(scores, bins=[x - 0.5 for x in range(int(top) + 2)], color="#4c72b0", edgecolor="white")
    left.set(title=f"{result.assignment}: scores of {len(scores)} students", xlabel=f"score (of {top:g})", ylabel="students")
    left.set_xlim(-0.5, top + 0.5)
    right.barh(items, rates, color=["#55a868" if r >= 0.75 else "#dd8452" if r >= 0.4 else "#c44e52" for r in rates])
    right.set(title="pass rate per item", xlim=(0, 1), xlabel="share of students who earned the item's points")
    right.invert_yaxis()
    right.xaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
