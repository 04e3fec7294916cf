"""The integrity report: each student's answers against the reference solutions, the rest of the
class and earlier classes, by token fingerprints with winnowing (Schleimer, Wilkerson and Aiken,
SIGMOD 2003, what MOSS does). It flags; it never changes a score.

Compared: the answer cells that define something (a quiz cell that only assigns its answers is left
out: right answers are the same numbers) and the cells a student added; the references are the
source notebook's solutions and the package's kernels (``attention_course.kernels``), both public.

1. tokens: a cell's code by the stdlib ``tokenize``; every identifier but an attribute (``.transpose``)
   or a builtin becomes ``V``, strings ``S``, docstrings, comments and layout are dropped: a renamed
   variable, a new comment or other whitespace leaves the tokens as they were;
2. fingerprints: a hash of every run of ``K`` tokens, and of those the smallest in each window of
   ``WINDOW`` runs (winnowing: any run of ``WINDOW + K - 1`` tokens that two cells share is found),
   less every run found in the release notebook (what was handed out matches everyone and is no
   evidence); a student's fingerprints are a set, so reordered helpers match as well;
3. similarity of two submissions: shared fingerprints over the fingerprints of the smaller one.

Why not copydetect (0.5.0, MIT, on PyPI): it k-grams the characters of pygments' filtered text (an
API name weighs its length), reads files, and hashes with Python's salted ``hash`` of strings, so the
fingerprints that winnowing keeps, and the similarities, change from one run to the next (0.37, 0.43,
0.42 for one pair of tests/integrity_class.py in three runs). Here every pair of a class is one matrix
product over the shared fingerprints (benchmarks/integrity_report.py: 500 students in about 3 s).
"""

import builtins
import csv
import html
import io
import keyword
import tokenize
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

import attention_course.kernels
from attention_course.grading.cells import grade_id, is_solution_cell, solution_code
from attention_course.grading.collect import answer_ids, collect
from attention_course.grading.course import ASSIGNMENTS, release_notebook, source_notebook
from attention_course.grading.verdicts.judge import student_cells

K = 7  # tokens per hashed run
WINDOW = 5  # runs per winnowing window: every shared run of 11 tokens or more is found
# Flagged: similarity >= THRESHOLD and at least MIN_SHARED fingerprints shared. Measured on the class of
# tests/integrity_class.py (01 and 02: 18 copy pairs, 88 honest ones, every honest solution passing the
# checks): the least similar copy is at 0.72 (69 shared), the most similar honest pair with 20 or more
# shared at 0.34 (31 shared: independent code in the same API shares its idioms); honest students with
# the same short function share all their fingerprints (1.0) but only 13 (01's causal_mask: a check and
# torch.tril) or 3 (02's kv_cache_bytes). 0.5 sits in the gap; 20 fingerprints (some 30 tokens in common
# besides what was handed out) keeps such short functions out. One exercise of five copied among one's
# own work scores 0.40 to 0.51: above every honest pair, but not always flagged (tests/test_integrity.py).
THRESHOLD = 0.5
MIN_SHARED = 20

REFERENCE = "reference solution"
KERNELS = "reference kernels (attention_course.kernels)"
ADDED = "a cell the student added"
_KEPT_NAMES = frozenset(dir(builtins))


@dataclass
class Submission:
    """One side of a comparison: a student, a reference or a student of an earlier class."""

    name: str
    kind: str  # "student", "reference" or "earlier"
    cells: dict[str, str]  # label -> code
    prints: dict[str, set[int]] = field(default_factory=dict)  # label -> the cell's fingerprints, boilerplate left out

    def fingerprint(self, boilerplate: frozenset[int]) -> "Submission":
        self.prints = {label: fingerprints(code, boilerplate) for label, code in self.cells.items()}
        return self

    @property
    def all_prints(self) -> set[int]:
        return set().union(*self.prints.values())


def tokens(source: str) -> list[tuple[str, int]]:
    """(normalized token, line) of a cell's code; an unfinished cell gives its tokens up to the error."""
    raw = []
    try:
        raw.extend(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        pass
    significant = [t for t in raw if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
                                                    tokenize.ENCODING, tokenize.ENDMARKER)]
    out: list[tuple[str, int]] = []
    for index, tok in enumerate(significant):
        previous = significant[index - 1] if index else None
        following = significant[index + 1] if index + 1 < len(significant) else None
        if tok.type == tokenize.NEWLINE:
            if out and out[-1][0] != ";":
                out.append((";", tok.start[0]))
        elif tok.type == tokenize.STRING:
            statement_start = previous is None or previous.type == tokenize.NEWLINE
            if not (statement_start and (following is None or following.type == tokenize.NEWLINE)):  # not a docstring
                out.append(("S", tok.start[0]))
        elif tok.type == tokenize.NAME:
            kept = keyword.iskeyword(tok.string) or tok.string in _KEPT_NAMES or (previous is not None and previous.string == ".")
            out.append((tok.string if kept else "V", tok.start[0]))
        elif tok.string.strip():
            out.append((tok.string, tok.start[0]))
    return out


def run_hashes(toks: list[tuple[str, int]]) -> list[int]:
    """The hash of each run of K tokens: the same in every process (Python salts the hashes of strings,
    not those of tuples of ints), so that the fingerprints winnowing keeps are too."""
    codes = [zlib.crc32(text.encode()) for text, _ in toks]
    return [hash(tuple(codes[i:i + K])) for i in range(len(codes) - K + 1)]


def winnow(hashes: list[int]) -> set[int]:
    """The fingerprints: the smallest hash of each window of WINDOW runs (all of them when fewer)."""
    if len(hashes) <= WINDOW:
        return set(hashes)
    return {min(hashes[i:i + WINDOW]) for i in range(len(hashes) - WINDOW + 1)}


def fingerprints(code: str, boilerplate: frozenset[int]) -> set[int]:
    return winnow(run_hashes(tokens(code))) - boilerplate


def boilerplate_of(release_nb) -> frozenset[int]:
    """Every run of tokens in the release notebook's code cells: set-up, stubs, checks."""
    return frozenset(h for cell in release_nb.cells if cell.cell_type == "code" for h in run_hashes(tokens(cell.source)))


def compared_ids(source_nb) -> set[str]:
    """The answer cells compared: those whose solution defines something. A quiz cell that only assigns
    its answers is left out: honest students who answer right write the same numbers."""
    ids = set()
    for cell in source_nb.cells:
        if is_solution_cell(cell):
            names = [t for t, _ in tokens(solution_code(cell))]
            if "def" in names or "class" in names:
                ids.add(grade_id(cell))
    return ids


def notebook_cells(nb, compared: set[str]) -> dict[str, str]:
    """label -> code of what the student wrote: the compared answer cells and the cells they added."""
    cells = {}
    for index, label, source in student_cells(nb):
        if label in compared:
            cells[label] = source
        elif label == f"cell {index + 1}":
            cells[f"{ADDED} ({label})"] = source
    return cells


def references(source_nb, compared: set[str]) -> list[Submission]:
    solutions = {grade_id(c): solution_code(c) for c in source_nb.cells if is_solution_cell(c) and grade_id(c) in compared}
    kernels = Path(attention_course.kernels.__file__).parent
    modules = {f"kernels/{path.name}": path.read_text() for path in sorted(kernels.glob("*.py")) if path.name != "__init__.py"}
    return [Submission(REFERENCE, "reference", solutions), Submission(KERNELS, "reference", modules)]


@dataclass
class Match:
    student: str
    other: str
    similarity: float
    shared: int
    flagged: bool
    cells: list[tuple[str, str]] = field(default_factory=list)  # (student's cell, other's cell) sharing fingerprints


@dataclass
class IntegrityReport:
    assignment: str
    students: list[str]  # the class's, not the earlier classes'
    matches: list[Match]  # ranked, most similar first
    csv_path: Path
    html_path: Path
    threshold: float
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[Match]:
        return [m for m in self.matches if m.flagged]

    def summary_line(self) -> str:
        """One line for the printed summary: who is flagged, most similar first, and where to read why."""
        who: list[str] = []
        for m in self.flagged:
            who += [name for name in (m.student, m.other) if name in self.students and name not in who]
        if not who:
            return f"integrity: none of the {len(self.students)} students flagged (similarity >= {self.threshold:g}); {self.html_path}"
        return (f"integrity: {len(who)} of {len(self.students)} students flagged ({len(self.flagged)} pairs at similarity >= "
                f"{self.threshold:g}): {', '.join(who[:8])}{', ...' if len(who) > 8 else ''}; read {self.html_path}")


def similarities(submissions: list[Submission]) -> tuple[torch.Tensor, torch.Tensor]:
    """(shared fingerprints, similarity) of every two submissions, as [n, n] matrices."""
    prints = [s.all_prints for s in submissions]
    seen: dict[int, int] = {}
    for fp in prints:
        for h in fp:
            seen[h] = seen.get(h, 0) + 1
    columns = {h: i for i, h in enumerate(h for h, count in seen.items() if count > 1)}  # one nobody shares: in the size only
    incidence = torch.zeros(len(prints), len(columns))  # [n, shared prints]
    for row, fp in enumerate(prints):
        incidence[row, [columns[h] for h in fp if h in columns]] = 1.0
    shared = incidence @ incidence.T  # [n, n]
    sizes = torch.tensor([len(fp) for fp in prints], dtype=torch.float32)  # [n]
    smaller = torch.minimum(sizes[:, None], sizes[None, :]).clamp(min=1)  # [n, n]
    return shared, shared / smaller


def matched_cells(a: Submission, b: Submission) -> list[tuple[str, str]]:
    """(cell of a, the cell of b it shares most with), for a's cells that share fingerprints with b, most first."""
    pairs = []
    for label, mine in a.prints.items():
        best = max(b.prints, key=lambda other: len(mine & b.prints[other]), default=None)
        if best is not None and mine & b.prints[best]:
            pairs.append((len(mine & b.prints[best]), label, best))
    return [(label, other) for _, label, other in sorted(pairs, key=lambda p: -p[0])]


def matched_lines(code: str, other: str, boilerplate: frozenset[int]) -> set[int]:
    """Lines of ``code`` covered by a run of K tokens that ``other`` has too (handed-out runs excepted)."""
    toks = tokens(code)
    theirs = set(run_hashes(tokens(other))) - boilerplate
    lines = set()
    for start, h in enumerate(run_hashes(toks)):
        if h in theirs:
            lines.update(range(toks[start][1], toks[start + K - 1][1] + 1))
    return lines


def compare(submissions: list[Submission], threshold: float = THRESHOLD, min_shared: int = MIN_SHARED) -> list[Match]:
    """Every student against every other student, the references and the earlier classes (fingerprinted):
    the flagged pairs, and each student's closest match besides (where the rest of the class stands)."""
    shared, similarity = similarities(submissions)
    student = torch.tensor([s.kind == "student" for s in submissions])  # [n]
    # A pair is compared once: student i with a later student, or with any reference or earlier submission.
    later = torch.ones_like(similarity, dtype=torch.bool).triu(diagonal=1)
    compared = student[:, None] & (later | ~student[None, :])  # [n, n]
    flagged = compared & (similarity >= threshold) & (shared >= min_shared)
    both_ways = compared | compared.T
    closest = torch.where(both_ways, similarity + shared * 1e-6, -1.0).argmax(dim=1)  # ties: more shared first
    pairs = {(int(i), int(j)) for i, j in flagged.nonzero()}
    for i in torch.nonzero(student).flatten().tolist():
        j = int(closest[i])
        if shared[i, j] > 0:
            pairs.add((i, j) if compared[i, j] else (j, i))
    matches = [Match(submissions[i].name, submissions[j].name, float(similarity[i, j]), int(shared[i, j]), bool(flagged[i, j]),
                     matched_cells(submissions[i], submissions[j]) if flagged[i, j] else []) for i, j in pairs]
    return sorted(matches, key=lambda m: (-m.similarity, -m.shared, m.student, m.other))


def write_csv(matches: list[Match], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "other", "similarity", "shared_fingerprints", "cells_matched", "flagged"])
        for m in matches:
            writer.writerow([m.student, m.other, f"{m.similarity:.3f}", m.shared, _cells_text(m), "yes" if m.flagged else ""])


def _cells_text(match: Match) -> str:
    return "; ".join(a if a == b else f"{a} ~ {b}" for a, b in match.cells)


MAX_SHOWN = 100  # flagged pairs shown side by side in the HTML; more means the threshold is wrong for this class

_STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}
.flag{background:#fde2e1}pre{margin:0;font-size:12px}.code td{vertical-align:top;width:50%}mark{background:#ffe38a}"""


def _code_html(code: str, lines: set[int]) -> str:
    rows = [f"<mark>{html.escape(line)}</mark>" if number in lines else html.escape(line)
            for number, line in enumerate(code.splitlines(), start=1)]
    return "<pre>" + "\n".join(rows) + "</pre>"


def write_html(report: IntegrityReport, submissions: list[Submission], boilerplate: frozenset[int]) -> None:
    by_name = {s.name: s for s in submissions}
    title = f"Integrity report: {html.escape(report.assignment)}"
    parts = [f"<!doctype html><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style><h1>{title}</h1>",
             f"<p>{len(report.students)} students. Flagged (red): similarity &ge; {report.threshold:g}, the share of the smaller "
             f"side's fingerprints that the other side has too, and at least {MIN_SHARED} fingerprints shared. The other rows "
             "are each student's closest match. Code handed out in the release never matches. A flag is a reason to read "
             "the two side by side, not a verdict; no score was changed.</p>",
             "<table><tr><th>#</th><th>student</th><th>other</th><th>similarity</th><th>shared</th><th>cells</th></tr>"]
    shown = [m for m in report.matches if m.flagged][:MAX_SHOWN]
    for rank, m in enumerate(report.matches, start=1):
        name = f"<a href='#pair{rank}'>{html.escape(m.student)}</a>" if m in shown else html.escape(m.student)
        parts.append(f"<tr class='{'flag' if m.flagged else ''}'><td>{rank}</td><td>{name}</td><td>{html.escape(m.other)}</td>"
                     f"<td>{m.similarity:.2f}</td><td>{m.shared}</td><td>{html.escape(_cells_text(m))}</td></tr>")
    parts.append("</table>")
    if len(shown) < len(report.flagged):
        parts.append(f"<p>The {MAX_SHOWN} most similar flagged pairs are shown below, of {len(report.flagged)}.</p>")
    for rank, m in enumerate(report.matches, start=1):
        if m not in shown:
            continue
        a, b = by_name[m.student], by_name[m.other]
        parts.append(f"<h2 id='pair{rank}'>{html.escape(m.student)} ~ {html.escape(m.other)}: {m.similarity:.2f}</h2>")
        for mine, theirs in m.cells:
            left, right = a.cells[mine], b.cells[theirs]
            parts.append(f"<table class='code'><tr><th>{html.escape(m.student)}: {html.escape(mine)}</th>"
                         f"<th>{html.escape(m.other)}: {html.escape(theirs)}</th></tr>"
                         f"<tr><td>{_code_html(left, matched_lines(left, right, boilerplate))}</td>"
                         f"<td>{_code_html(right, matched_lines(right, left, boilerplate))}</td></tr></table><br>")
    report.html_path.write_text("\n".join(parts))


def submissions_of(root: Path, assignment: str, notebooks: dict, earlier: tuple[Path, ...] = ()
                   ) -> tuple[list[Submission], frozenset[int], list[str]]:
    """(the class, the references and the earlier classes, fingerprinted; the boilerplate; notes on the earlier files)."""
    source_nb = nbformat.read(source_notebook(root, assignment), as_version=4)
    boilerplate = boilerplate_of(nbformat.read(release_notebook(root, assignment), as_version=4))
    compared = compared_ids(source_nb)
    submissions = [Submission(student, "student", notebook_cells(nb, compared)) for student, nb in sorted(notebooks.items())]
    submissions += references(source_nb, compared)
    notes = []
    if earlier:
        assignment_ids = {a: answer_ids(nbformat.read(source_notebook(root, a), as_version=4))
                          for a in ASSIGNMENTS if source_notebook(root, a).is_file()}
        for folder in map(Path, earlier):
            entries, said = collect(folder, assignment_ids, assignment)
            notes += [f"{folder.name}: {note}" for note in said]
            notes += [f"{folder.name}/{e.student}: {e.problem}; left out" for e in entries if e.notebook is None]
            submissions += [Submission(f"{folder.name}/{e.student}", "earlier", notebook_cells(e.notebook, compared))
                            for e in entries if e.notebook is not None]
    return [s.fingerprint(boilerplate) for s in submissions], boilerplate, notes


def integrity_report(root: Path, assignment: str, notebooks: dict, out_dir: Path, earlier: tuple[Path, ...] = (),
                     threshold: float = THRESHOLD) -> IntegrityReport:
    """Compare the class's notebooks ({student: notebook}) with each other, the references and the
    notebooks of earlier classes (folders or zips, read as ``collect`` reads a class); write
    ``integrity.csv`` and ``integrity.html`` into ``out_dir``."""
    out_dir = Path(out_dir)
    submissions, boilerplate, notes = submissions_of(Path(root), assignment, notebooks, earlier)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = IntegrityReport(assignment, sorted(notebooks), compare(submissions, threshold), out_dir / "integrity.csv",
                             out_dir / "integrity.html", threshold, notes)
    write_csv(report.matches, report.csv_path)
    write_html(report, submissions, boilerplate)
    return report
