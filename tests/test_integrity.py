"""The integrity report on a class of honest students and copiers (tests/integrity_class.py)."""

import copy
import csv
import importlib.util
import random
import re

import nbformat
import pytest

from attention_course.cli import main
from attention_course.grading import integrity
from attention_course.grading.integrity import K, KERNELS, MIN_SHARED, REFERENCE, THRESHOLD, WINDOW
from course_copy import ROOT
from integrity_class import AMARA_01, ASSIGNMENTS, RENAMES_01, Written, reference_answers, class_of, notebook_of, recomment, rename


def _pairs(assignment: str):
    """{(student, other): (similarity, shared)} for every compared pair, the two references as one (the
    closer), and {(student, other): whether it is a copy} from the class's origins."""
    students = class_of(assignment)
    submissions, _, _ = integrity.submissions_of(ROOT, assignment, {s: nb for s, (nb, _) in students.items()})
    shared, similarity = integrity.similarities(submissions)
    names = [s.name for s in submissions]
    origin = {s: o for s, (_, o) in students.items()} | {REFERENCE: "reference", KERNELS: "reference"}
    scores, truth = {}, {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a in students and (b not in students or a < b):
                key = (a, "references" if b in (REFERENCE, KERNELS) else b)
                scores[key] = max(scores.get(key, (0.0, 0)), (float(similarity[i, j]), int(shared[i, j])))
                truth[key] = origin[a] == origin[b]
    return scores, truth


def _flagged(score) -> bool:
    return score[0] >= THRESHOLD and score[1] >= MIN_SHARED


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_the_report_flags_every_copy_and_no_honest_pair(assignment):
    scores, truth = _pairs(assignment)
    flagged = {pair for pair, score in scores.items() if _flagged(score)}
    copies = {pair for pair, is_copy in truth.items() if is_copy}
    precision = len(flagged & copies) / max(len(flagged), 1)
    recall = len(flagged & copies) / len(copies)
    print(f"{assignment}: {len(flagged)} pairs flagged, {len(copies)} copies: precision {precision:.2f}, recall {recall:.2f}; "
          f"weakest copy {min(scores[p] for p in copies)}, closest honest pair "
          f"{max((scores[p] for p in scores if p not in copies and scores[p][1] >= MIN_SHARED), default=None)}")
    assert flagged - copies == set(), "honest pairs flagged"
    assert copies - flagged == set(), "copies missed"


@pytest.mark.parametrize("copied", ["gpt2_attention", "attention_weights", "heads"])
def test_one_copied_exercise_among_own_work_scores_above_every_honest_pair(copied):
    """What the threshold can miss: one exercise of five copied (renamed) counts for its share of the
    whole, 0.40 to 0.51 against the reference here; still above every honest pair that shares as many
    fingerprints (0.34 at most)."""
    mine = dict(AMARA_01) | {copied: recomment(rename(reference_answers("01_causal_attention")[copied], RENAMES_01))}
    fay = notebook_of(Written("fay", "fay", mine), "01_causal_attention")
    submissions, _, _ = integrity.submissions_of(ROOT, "01_causal_attention", {"fay": fay})
    _, similarity = integrity.similarities(submissions)
    scores, truth = _pairs("01_causal_attention")
    honest = max(score[0] for pair, score in scores.items() if not truth[pair] and score[1] >= MIN_SHARED)
    assert float(similarity[0, [s.name for s in submissions].index(REFERENCE)]) > honest


def test_honest_students_who_wrote_the_same_short_function_are_not_flagged():
    scores, _ = _pairs("01_causal_attention")
    # erin wrote only causal_mask, the one line of torch.tril that amara and bruno wrote too: all of it shared,
    # too little of it to be evidence.
    assert scores[("amara", "erin")][0] == 1.0 and not _flagged(scores[("amara", "erin")])
    assert not _flagged(scores[("amara", "bruno")])
    scores, _ = _pairs("02_kv_cache")  # kv_cache_bytes: the product every honest student, and the reference, writes
    assert scores[("erin", "references")][0] == 1.0 and not _flagged(scores[("erin", "references")])


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_the_untouched_release_matches_nothing(assignment):
    scores, _ = _pairs(assignment)
    untouched = [score for pair, score in scores.items() if "untouched" in pair]
    assert untouched and all(score == (0.0, 0) for score in untouched)


def test_tokens_survive_renamed_variables_new_comments_and_layout():
    for code in AMARA_01.values():
        assert [t for t, _ in integrity.tokens(code)] == [t for t, _ in integrity.tokens(recomment(rename(code, {"logits": "z"})))]
    assert [t for t, _ in integrity.tokens("y = x.sum(dim=-1)  # why\n")] == ["V", "=", "V", ".", "sum", "(", "V", "=", "-", "1", ")", ";"]
    def texts(code):
        return [t for t, _ in integrity.tokens(code)]

    assert texts("y = x.sum(dim=-1)\nz = (y +\n") == texts("y = x.sum(dim=-1)\n") + ["V", "=", "(", "V", "+"]  # unfinished: read so far
    assert texts('def f(x):\n    """A docstring is a comment."""\n    return len(x)\n') == texts("def g(y):\n    return len(y)\n")


def test_winnowing_finds_every_shared_run_of_window_plus_k_minus_one_tokens():
    rng = random.Random(0)
    vocabulary = [str(n) for n in range(30)]
    for _ in range(200):
        run = [(rng.choice(vocabulary), 1) for _ in range(WINDOW + K - 1)]
        left = [(rng.choice(vocabulary), 1) for _ in range(rng.randrange(40))] + run + [("x", 1)] * rng.randrange(5)
        right = [("y", 1)] * rng.randrange(5) + run + [(rng.choice(vocabulary), 1) for _ in range(rng.randrange(40))]
        assert integrity.winnow(integrity.run_hashes(left)) & integrity.winnow(integrity.run_hashes(right))


def _write_class(folder, students, canvas=False):
    folder.mkdir(parents=True)
    for n, (name, (nb, _)) in enumerate(sorted(students.items())):
        name = name.replace('_', '')  # LMS ids have none
        file = f"{name}_{100 + n}_{200 + n}_causal_attention.ipynb" if canvas else f"{name}/Copy of it.ipynb"
        (folder / file).parent.mkdir(exist_ok=True)
        nbformat.write(nb, folder / file)


def test_report_files_are_ranked_and_escaped_and_earlier_classes_are_compared(tmp_path):
    students = class_of("01_causal_attention")
    notebooks = {s: nb for s, (nb, _) in students.items()}
    # An earlier class (a Canvas export) whose chen handed in what this year's "zed" hands in, with a tag in a comment.
    earlier = {"chen": students["chen"]}
    _write_class(tmp_path / "spring", earlier, canvas=True)
    zed = copy.deepcopy(notebooks["chen"])
    for cell in zed.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "attention":
            cell.source += "\n# </pre><script>alert('x')</script>\n"
    notebooks = {s: nb for s, nb in notebooks.items() if s != "chen"} | {"zed": zed}
    report = integrity.integrity_report(ROOT, "01_causal_attention", notebooks, tmp_path / "out", earlier=(tmp_path / "spring",))
    rows = list(csv.DictReader(open(report.csv_path)))
    assert [float(r["similarity"]) for r in rows] == sorted((float(r["similarity"]) for r in rows), reverse=True)
    earlier_rows = [r for r in rows if r["other"] == "spring/chen"]
    assert earlier_rows[0]["student"] == "zed" and earlier_rows[0]["flagged"] == "yes" and float(earlier_rows[0]["similarity"]) > 0.95
    assert "attention" in earlier_rows[0]["cells_matched"].split("; ")
    assert all(r["student"] not in ("spring/chen", REFERENCE, KERNELS) for r in rows)
    page = report.html_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<h2 id=") == len(report.flagged) and "<mark>" in page
    assert "zed" in report.summary_line() and str(report.html_path) in report.summary_line()


def test_a_student_the_report_cannot_read_is_left_out_of_the_earlier_class(tmp_path):
    folder = tmp_path / "fall"
    folder.mkdir()
    (folder / "broken.ipynb").write_text("{not json")
    report = integrity.integrity_report(ROOT, "02_kv_cache", {s: nb for s, (nb, _) in class_of("02_kv_cache").items()},
                                        tmp_path / "out", earlier=(folder,))
    assert all(not m.other.startswith("fall/") for m in report.matches)
    assert len(report.notes) == 1 and report.notes[0].startswith("fall/broken: the file is not a readable notebook")


def test_the_integrity_command(tmp_path, monkeypatch, capsys):
    students = {s: v for s, v in class_of("02_kv_cache").items()}
    _write_class(tmp_path / "class", students)
    monkeypatch.chdir(ROOT)
    assert main(["integrity", "02_kv_cache", str(tmp_path / "class"), "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "integrity: 3 of 7 students flagged (3 pairs at similarity >= 0.5): chen, chenfriend, refrenamed" in said
    assert (tmp_path / "out" / "integrity.csv").is_file() and (tmp_path / "out" / "integrity.html").is_file()
    assert {r["student"] for r in csv.DictReader(open(tmp_path / "out" / "integrity.csv")) if r["flagged"]} == {"chen", "refrenamed"}


def test_the_benchmark_times_a_synthesized_class(capsys):
    spec = importlib.util.spec_from_file_location("integrity_benchmark", ROOT / "benchmarks" / "integrity_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--students", "30", "--copiers", "0.2"])
    said = capsys.readouterr().out
    assert re.search(r"^30 students of 01_causal_attention: integrity report in [\d.]+ s \(\d+ rows, \d+ pairs flagged", said, re.M)
    copied = module.synthesized_class(30, 0.2, 0)[1]
    assert copied and f"copiers flagged with the student they copied: {len(copied)} of {len(copied)}" in said
