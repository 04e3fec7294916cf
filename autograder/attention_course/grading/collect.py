"""From what an LMS hands an instructor to nbgrader's ``submitted/`` layout.

SUBMISSIONS is a zip file or a folder, holding one notebook per student under any file name.
Each file's path inside it (``/``-separated) is matched against the student-id patterns below,
first match wins; ``--id-pattern`` puts your own regular expressions, with a named group
``student``, in front of them. Which assignment a notebook belongs to is read from its content
(the graded cells it carries), not from its name, so "Copy of kv_cache (1).ipynb" is fine.

A Canvas or Moodle download keeps what the LMS put in its names (Canvas's user id and ``_LATE_``,
Moodle's participant id and full name): ``lms.py`` writes them back into the files each LMS imports.
When each file was handed in is kept where the download tells it (``Entry.submitted``) and written
where nbgrader reads it (``timestamp.txt``), for its late-submission penalties (``late.py``).
"""

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import nbformat

from attention_course.grading.cells import grade_id

# Canvas's "Download Submissions": "doejane_12345_67890_causal_attention.ipynb", "doejane_LATE_12345_67890_...":
# the student's name, LATE where Canvas judged it late, the user id, the id of the submitted file (attachment).
CANVAS = r"^(?:.*/)?(?P<lms_prefix>(?P<student>[A-Za-z0-9-]+)_(?P<late>late_)?(?P<lms_user>\d+)_(?P<attachment>\d+)_)[^/]*\.ipynb$"
# Moodle's "Download all submissions": "Jane Doe_123456_assignsubmission_file_/causal_attention.ipynb" (in
# folders; no trailing "_" since Moodle 4.1), "Jane Doe_123456_assignsubmission_file_causal_attention.ipynb" (without):
# the full name and the participant id (the assignment's own id for the student, also under blind marking).
MOODLE = r"^(?:.*/)?(?P<lms_prefix>(?P<student>[^/]+?)_(?P<lms_user>\d+)_assignsubmission_file(?:_/|/|_))[^/]*\.ipynb$"

STUDENT_PATTERNS = (
    CANVAS,
    MOODLE,
    # One folder per student: "jdoe/Copy of causal_attention.ipynb".
    r"^(?:.*/)?(?P<student>[^/]+)/[^/]*\.ipynb$",
    # One file per student: "jdoe.ipynb", "jdoe_causal_attention.ipynb", "jdoe - kv_cache (1).ipynb".
    r"^(?P<student>[^/_ ]+?)(?:[ _-].*)?\.ipynb$",
)


@dataclass
class Entry:
    student: str
    origin: str  # the path inside SUBMISSIONS
    notebook: object | None  # the parsed notebook, None when unusable
    problem: str = ""  # why it cannot be graded, "" when it can
    repairs: list[str] = field(default_factory=list)  # what was mended so that nbgrader can read it
    lms: str = ""  # "canvas" or "moodle" when the file is named as that LMS names it, else ""
    lms_user: str = ""  # Canvas's user id, Moodle's participant id
    lms_prefix: str = ""  # the part of the name the LMS reads its ids from, for files handed back to it
    late_flag: bool = False  # Canvas named the file _LATE_
    submitted: datetime | None = None  # when it was handed in (UTC, naive as nbgrader keeps it); None: not told

    @property
    def full_name(self) -> str:
        """Moodle's full name of the student; Canvas's name part ("doejane")."""
        name = self.lms_prefix.split(f"_{self.lms_user}_")[0]
        return re.sub(r"_late$", "", name, flags=re.IGNORECASE) if self.lms == "canvas" else name


def lms_ids(relative_path: str) -> dict:
    """What Canvas or Moodle put in the file's path: lms, lms_user, lms_prefix, late_flag ({} for neither)."""
    for lms, pattern in (("canvas", CANVAS), ("moodle", MOODLE)):
        match = re.match(pattern, relative_path, flags=re.IGNORECASE)
        if match:
            return {"lms": lms, "lms_user": match.group("lms_user"), "lms_prefix": match.group("lms_prefix"),
                    "late_flag": lms == "canvas" and bool(match.group("late"))}
    return {}


def as_utc(moment: datetime) -> datetime:
    """A time as nbgrader keeps it: UTC without a zone; a time without a zone is this machine's local time."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _file_time(relative: str, ids: dict, times: dict[str, datetime], lms_times: dict[str, datetime]) -> datetime | None:
    """When the file was handed in, where the download says it. Canvas and Moodle stamp the files of a
    download with the time the zip was made (canvas-lms issue 2219), not when each was handed in: for
    them only the LMS's own record counts (Moodle's grading worksheet, ``lms_times``), and Canvas's LATE."""
    if ids:
        return lms_times.get(ids["lms_user"])
    return times.get(relative)


def student_id(relative_path: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        match = re.match(pattern, relative_path, flags=re.IGNORECASE)
        if match:
            raw = match.group("student").strip()
            return re.sub(r"[^a-z0-9_-]+", "_", raw.lower()).strip("_") or None
    return None


def _files(submissions: Path, scratch: Path, times: dict[str, datetime]) -> dict[str, bytes]:
    """Every file inside SUBMISSIONS as {relative path: bytes}; zips unpacked (zip-in-zip too).
    ``times`` gets each file's time: its zip entry's (local time where it was zipped), or its mtime."""
    found: dict[str, bytes] = {}

    def add_zip(data_path: Path, prefix: str) -> None:
        with zipfile.ZipFile(data_path) as archive:
            for info in archive.infolist():
                name = info.filename
                if info.is_dir() or name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._"):
                    continue
                data = archive.read(info)
                if name.lower().endswith(".zip"):
                    inner = scratch / f"inner{len(found)}.zip"
                    inner.write_bytes(data)
                    add_zip(inner, f"{prefix}{PurePosixPath(name).with_suffix('')}/")
                else:
                    found[f"{prefix}{name}"] = data
                    times[f"{prefix}{name}"] = as_utc(datetime(*info.date_time))

    if submissions.is_file() and zipfile.is_zipfile(submissions):
        add_zip(submissions, "")
    elif submissions.is_dir():
        for path in sorted(submissions.rglob("*")):
            if path.is_file():
                found[path.relative_to(submissions).as_posix()] = path.read_bytes()
                times[path.relative_to(submissions).as_posix()] = as_utc(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))
    else:
        raise FileNotFoundError(f"{submissions} is neither a folder nor a zip file")
    return found


def snapshot(submissions: Path) -> dict[Path, bytes]:
    """The bytes of every file given in for grading (the zip itself, or each file of the folder)."""
    paths = [submissions] if submissions.is_file() else [p for p in submissions.rglob("*") if p.is_file()]
    return {path: path.read_bytes() for path in paths}


def restore_originals(submissions: Path, originals: dict[Path, bytes]) -> list[str]:
    """Put back any file that changed since ``snapshot``; the relative paths of those restored."""
    restored = []
    for path, data in originals.items():
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            restored.append(path.name if path == submissions else path.relative_to(submissions).as_posix())
    return restored


def read_notebook(data: bytes):
    """The notebook in ``data`` and "", or None and what is wrong with it."""
    if not data.strip():
        return None, "the file is empty"
    try:
        notebook = nbformat.reads(data.decode("utf-8-sig"), as_version=4)
    except UnicodeDecodeError:
        return None, "the file is not text (not a notebook)"
    except Exception as error:
        return None, f"the file is not a readable notebook ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if not isinstance(notebook.get("cells"), list):
        return None, "the file is JSON but not a notebook (no cells)"
    return notebook, ""


def answer_ids(notebook) -> set[str]:
    return {grade_id(cell) for cell in notebook.cells if grade_id(cell)}


def repair_cells(notebook, known_ids: set[str]) -> list[str]:
    """Mend the cell metadata that stops nbgrader (0.9) with a KeyError instead of grading:
    a grade id it does not know, a grade id twice (the last one keeps it), an emptied block.
    A mended cell becomes an ordinary cell; a graded cell it stood for is put back by nbgrader."""
    repairs, seen = [], set()
    for cell in reversed(notebook.cells):
        meta = cell.get("metadata", {})
        if "nbgrader" not in meta:
            continue
        cell_id = meta["nbgrader"].get("grade_id") if isinstance(meta["nbgrader"], dict) else None
        if cell_id in known_ids and cell_id not in seen:
            seen.add(cell_id)
            continue
        del meta["nbgrader"]
        if cell_id is None:
            repairs.append("a cell's grading metadata was incomplete")
        elif cell_id in seen:
            repairs.append(f"cell {cell_id!r} was there twice (the last one is graded)")
        else:
            repairs.append(f"a cell had an unknown grade id {cell_id!r}")
    return repairs[::-1]


def collect(submissions: Path, assignment_ids: dict[str, set[str]], assignment: str,
            extra_patterns: tuple[str, ...] = (), scratch: Path | None = None,
            lms_times: dict[str, datetime] | None = None) -> tuple[list[Entry], list[str]]:
    """The class's entries for ``assignment`` (one per student) and notes on files left aside.

    ``assignment_ids`` maps each assignment to the grade ids of its source notebook; ``lms_times``
    the LMS's own submission times by its user id (``lms.read_moodle_worksheet``).
    """
    scratch = scratch or Path(submissions).parent
    patterns = (*extra_patterns, *STUDENT_PATTERNS)
    notes: list[str] = []
    by_student: dict[str, list[Entry]] = {}
    times: dict[str, datetime] = {}
    for relative, data in _files(Path(submissions), scratch, times).items():
        if not relative.lower().endswith(".ipynb"):
            if not PurePosixPath(relative).name.startswith("."):
                notes.append(f"{relative}: not a notebook, left aside")
            continue
        if "/.ipynb_checkpoints/" in f"/{relative}":
            continue
        student = student_id(relative, patterns)
        if student is None:
            notes.append(f"{relative}: no student id found in the path (add a pattern with --id-pattern)")
            continue
        notebook, problem = read_notebook(data)
        if notebook is not None:
            ids = answer_ids(notebook)
            mine = len(ids & assignment_ids[assignment])
            best = max(assignment_ids, key=lambda a: len(ids & assignment_ids[a]))
            # The assignments share grade ids (setup, q1, ...): the one whose ids the notebook holds most of is its own.
            if best != assignment and len(ids & assignment_ids[best]) > mine:
                notebook, problem = None, f"this is the notebook of {best}, not of {assignment}"
            elif mine == 0:
                notebook, problem = None, f"none of {assignment}'s cells are in it (a different notebook, or its cells' metadata lost)"
        repairs = repair_cells(notebook, assignment_ids[assignment]) if notebook is not None else []
        ids = lms_ids(relative)
        by_student.setdefault(student, []).append(Entry(student, relative, notebook, problem, repairs, **ids,
                                                        submitted=_file_time(relative, ids, times, lms_times or {})))
    entries = []
    for student, candidates in sorted(by_student.items()):
        usable = [e for e in candidates if e.notebook is not None]
        chosen = (usable or candidates)[-1]
        if len(candidates) > 1:
            notes.append(f"{student}: {len(candidates)} notebooks, graded {chosen.origin}")
        entries.append(chosen)
    return entries, notes


def place(entry: Entry, root: Path, assignment: str, notebook_name: str) -> None:
    """Write the entry where nbgrader looks for it; an unusable one leaves the folder empty, which
    nbgrader grades as a missing notebook (zero). The time it was handed in goes in ``timestamp.txt``,
    as nbgrader's own collect writes it and its autograde reads it (``CourseDirectory.get_existing_timestamp``)."""
    folder = root / "submitted" / entry.student / assignment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if entry.notebook is not None:
        nbformat.write(entry.notebook, folder / notebook_name)
    if entry.submitted is not None:
        (folder / "timestamp.txt").write_text(entry.submitted.strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
