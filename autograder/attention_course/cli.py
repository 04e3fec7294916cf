"""``attention-course``: the course's command line."""

import argparse
import os
import sys
from pathlib import Path

from attention_course.grading.course import ASSIGNMENTS, assignment_of, find_course_root, source_notebook


def _example_class(args) -> int:
    from attention_course.grading.example_class import run_example_class

    results = run_example_class(find_course_root(), args.assignment or None)
    unexpected = [f"{r.assignment}/{r.student.name}" for r in results if not r.as_expected]
    if unexpected:
        print(f"\nThese examples did not score as their description says: {', '.join(unexpected)}", file=sys.stderr)
        return 1
    return 0


def _grade_notebook(args) -> int:
    from attention_course.grading.selfgrade import grade_notebook

    path = Path(args.notebook)
    if not path.is_file():
        print(f"no such notebook: {path}", file=sys.stderr)
        return 2
    if args.source:
        source = Path(args.source)
    else:
        assignment = args.assignment or assignment_of(path.name)
        try:
            source = source_notebook(find_course_root(), assignment)
        except FileNotFoundError:  # no clone (Colab): the hidden tests of the installed version, from the repository
            from attention_course.grading.selfgrade import released_source

            source = released_source(assignment)
            print(f"hidden tests: {source}", file=sys.stderr)
    report = grade_notebook(path, source, cell_timeout=args.timeout)
    print(report.render())
    return 0


def _grade(args) -> int:
    from dataclasses import replace

    from attention_course.grading.class_grading import grade_class
    from attention_course.grading.nbgrader_plugin import configured_limits
    from attention_course.grading.summary import render, save_figure

    root = find_course_root()
    limits = configured_limits(root)  # nbgrader_config.py's, then what the command line says
    if args.cell_timeout is not None:
        limits = replace(limits, cell_seconds=args.cell_timeout)
    if args.notebook_timeout is not None:
        limits = replace(limits, notebook_seconds=args.notebook_timeout)
    if args.memory_mb is not None:
        limits = replace(limits, memory_bytes=args.memory_mb * 2**20 or None)
    result = grade_class(root, args.assignment, Path(args.submissions), workers=args.workers, limits=limits,
                         id_patterns=tuple(args.id_pattern), only_student=args.student,
                         compare_with=tuple(map(Path, args.compare_with)), scheduler=args.scheduler, due=args.due,
                         extensions=Path(args.extensions) if args.extensions else None,
                         canvas_column=args.canvas_assignment,
                         moodle_worksheet=Path(args.moodle_worksheet) if args.moodle_worksheet else None)
    print(render(result, args.workers or os.cpu_count() or 1))
    figure = save_figure(result, root / f"grading_summary_{args.assignment}.png")
    print(f"\nFeedback: {root / 'feedback'}/<student>/{args.assignment}/   Grades: {root / 'grades.csv'}   Figure: {figure}")
    return 0


def _integrity(args) -> int:
    import nbformat

    from attention_course.grading.collect import answer_ids, collect
    from attention_course.grading.integrity import integrity_report

    root = find_course_root()
    assignment_ids = {a: answer_ids(nbformat.read(source_notebook(root, a), as_version=4))
                      for a in ASSIGNMENTS if source_notebook(root, a).is_file()}
    entries, notes = collect(Path(args.submissions), assignment_ids, args.assignment, tuple(args.id_pattern))
    notes += [f"{e.student}: {e.problem}; left out" for e in entries if e.notebook is None]
    report = integrity_report(root, args.assignment, {e.student: e.notebook for e in entries if e.notebook is not None},
                              Path(args.out) if args.out else root / "integrity" / args.assignment, tuple(map(Path, args.compare_with)),
                              args.threshold)
    for note in notes + report.notes:
        print(f"  - {note}")
    print(report.summary_line())
    print(f"Table: {report.csv_path}")
    return 0


def _package(args) -> int:
    from attention_course.grading.platforms.build import package_gradescope, package_prairielearn

    root = find_course_root()
    if args.platform == "gradescope":
        out = package_gradescope(root, args.assignment, Path(args.out or f"gradescope_{args.assignment}.zip"),
                                 hidden_visibility=args.hidden_visibility)
        print(f"{out}: upload it as the autograder of a Gradescope programming assignment (Configure Autograder)")
    else:
        out = package_prairielearn(root, args.assignment, Path(args.out or f"prairielearn_{args.assignment}"), image=args.image)
        print(f"{out}/: copy it into your PrairieLearn course's questions/; build and push the image from {out}/image/ "
              "(its Dockerfile says how) and name it in info.json")
    return 0


def _canvas_feedback(args) -> int:
    from attention_course.grading.canvas_api import upload_feedback

    token = os.environ.get("CANVAS_TOKEN")
    if not token:
        print("set CANVAS_TOKEN to a Canvas access token (Account > Settings > New Access Token)", file=sys.stderr)
        return 2
    done = upload_feedback(Path(args.feedback_zip), args.url, args.course, args.assignment, token)
    print(f"feedback attached to {len(done)} submissions")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attention-course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    example = commands.add_parser(
        "example-class",
        help="generate release/ with nbgrader, autograde the bundled example submissions, print grades, write feedback",
    )
    example.add_argument("assignment", nargs="*", choices=[*ASSIGNMENTS, []], help="default: every assignment in source/")
    example.set_defaults(run=_example_class)

    grade_class = commands.add_parser(
        "grade", help="grade a class: an LMS zip or a folder of notebooks -> nbgrader gradebook, feedback, grades.csv"
    )
    grade_class.add_argument("assignment", choices=list(ASSIGNMENTS))
    grade_class.add_argument("submissions", help="a zip file or a folder, one notebook per student under any name")
    grade_class.add_argument("--workers", type=int, default=None, help="notebooks run at once (default: the number of cores)")
    grade_class.add_argument("--student", help="grade (again) only this student")
    grade_class.add_argument("--id-pattern", action="append", default=[],
                             help="a regular expression with a group (?P<student>...) matched against each file's path "
                                  "inside SUBMISSIONS; tried before the built-in patterns (repeatable)")
    grade_class.add_argument("--cell-timeout", type=int, help="seconds per cell (default: c.ConfinedExecute.cell_seconds of "
                             "nbgrader_config.py, else 120)")
    grade_class.add_argument("--notebook-timeout", type=int, help="seconds per notebook (default: c.ConfinedExecute.notebook_seconds, "
                             "else 600)")
    grade_class.add_argument("--memory-mb", type=int, help="memory limit of each notebook's kernel in MiB, 0 for none (default: "
                             "c.ConfinedExecute.memory_bytes, else 8 GiB)")
    grade_class.add_argument("--scheduler", default=None, metavar="ADDRESS",
                             help="grade on a Dask cluster: its scheduler's address (tcp://host:8786, tls://...), or local:N "
                                  "for a LocalCluster of N worker processes here (default: c.Cluster.scheduler of "
                                  "nbgrader_config.py; none: a pool of --workers processes here)")
    grade_class.add_argument("--compare-with", action="append", default=[], metavar="FOLDER",
                             help="an earlier class's submissions (folder or zip), for the integrity report (repeatable)")
    grade_class.add_argument("--due", help="the due date, e.g. '2026-03-02 23:59 Europe/Berlin' (default: c.LateWork.due of "
                             "nbgrader_config.py, else the gradebook's); late work costs what c.CoursePenalty says")
    grade_class.add_argument("--extensions", help="a CSV of extensions, columns: student, and hours or days (default: "
                             "c.LateWork.extensions)")
    grade_class.add_argument("--canvas-assignment", help="the assignment's column in Canvas's gradebook export, "
                             "'Title (assignment id)', for canvas_grades_<assignment>.csv (default: the assignment id)")
    grade_class.add_argument("--moodle-worksheet", help="the grading worksheet downloaded from Moodle: its submission times "
                             "decide lateness, and moodle_grades_<assignment>.csv is it filled in")
    grade_class.set_defaults(run=_grade)

    from attention_course.grading.integrity import THRESHOLD

    integrity = commands.add_parser(
        "integrity", help="a similarity report: each student against the reference solutions, the class and earlier classes "
                          "(integrity.csv, integrity.html); it changes no score")
    integrity.add_argument("assignment", choices=list(ASSIGNMENTS))
    integrity.add_argument("submissions", help="a zip file or a folder, one notebook per student under any name")
    integrity.add_argument("--compare-with", action="append", default=[], metavar="FOLDER",
                           help="an earlier class's submissions (a folder or a zip, any names), compared too (repeatable)")
    integrity.add_argument("--out", help="where integrity.csv and integrity.html go (default: integrity/ASSIGNMENT/ in the "
                                         "course directory, beside grades.csv)")
    integrity.add_argument("--threshold", type=float, default=THRESHOLD, help=f"similarity flagged (default {THRESHOLD})")
    integrity.add_argument("--id-pattern", action="append", default=[], help="as for grade (repeatable)")
    integrity.set_defaults(run=_integrity)

    canvas = commands.add_parser(
        "canvas-feedback", help="attach the feedback pages of canvas_feedback_<assignment>.zip to the students' Canvas "
        "submissions as comments, through Canvas's API (token in CANVAS_TOKEN); the alternative to Re-Upload Submissions")
    canvas.add_argument("feedback_zip")
    canvas.add_argument("--url", required=True, help="your Canvas, e.g. https://canvas.example.edu")
    canvas.add_argument("--course", required=True, help="the course id (in the course's address: /courses/ID)")
    canvas.add_argument("--assignment", required=True, help="the assignment id (/assignments/ID)")
    canvas.set_defaults(run=_canvas_feedback)

    grade = commands.add_parser(
        "grade-notebook", help="grade one notebook with the hidden tests, without nbgrader's database (for self-learners)"
    )
    grade.add_argument("notebook", help="your .ipynb file")
    grade.add_argument("--assignment", choices=list(ASSIGNMENTS), help="default: recognised from the file name")
    grade.add_argument("--source", help="the instructor notebook to take the tests from (default: the course's source/ in a "
                       "clone; elsewhere, e.g. Colab, downloaded from the repository at the tag v<installed version>)")
    from attention_course.grading.limits import Limits

    grade.add_argument("--timeout", type=int, default=Limits().cell_seconds,
                       help=f"seconds per cell (default {Limits().cell_seconds})")
    grade.set_defaults(run=_grade_notebook)

    package = commands.add_parser(
        "package", help="an assignment's autograder for Gradescope (a zip) or PrairieLearn (a question folder)")
    platforms = package.add_subparsers(dest="platform", required=True)
    gradescope = platforms.add_parser("gradescope", help="the autograder zip: setup.sh, run_autograder, the package, the hidden tests")
    gradescope.add_argument("assignment", choices=list(ASSIGNMENTS))
    gradescope.add_argument("--out", help="the zip to write (default: gradescope_ASSIGNMENT.zip)")
    from attention_course.grading.platforms import VISIBILITIES

    gradescope.add_argument("--hidden-visibility", choices=VISIBILITIES, default="after_due_date",
                            help="when students see the result of an item with hidden tests (default: after_due_date; "
                                 "every other item is visible at once)")
    prairielearn = platforms.add_parser("prairielearn", help="a question folder: info.json, question.html, tests/, image/")
    prairielearn.add_argument("assignment", choices=list(ASSIGNMENTS))
    prairielearn.add_argument("--out", help="the folder to write (default: prairielearn_ASSIGNMENT)")
    prairielearn.add_argument("--image", help="the grader image's name in info.json (default: attention-course-grader:VERSION)")
    package.set_defaults(run=_package)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"attention-course: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
