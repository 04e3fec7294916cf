"""nbgrader's autograde with the course's execution and out-of-process verdicts.

``nbgrader_config.py`` puts ``ConfinedExecute`` where nbgrader's ``Execute`` stands (the notebook run
in a kernel forked from a zygote, within limits, in a scratch copy of its folder; then the harvest
notebook, built from the student's accepted code, in a clean kernel of its own), then ``ApplyVerdicts``
judges every item in nbgrader's own process, and nbgrader scores the notebook and stores the grades.
Plain ``nbgrader autograde`` and formgrader's button run them so; the grade command's workers run the
same autograde, through nbgrader's Python API (``notebook_job``)."""

import asyncio
from pathlib import Path

import jinja2
import nbformat
from nbconvert.exporters import HTMLExporter
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer

from attention_course.grading.course import source_notebook
from attention_course.grading.execute import execute_with_harvest
from attention_course.grading.limits import Limits, confined
from attention_course.grading.nbgrader_steps import course_config
from attention_course.grading.zygote import shared_zygote


def _root(preprocessor: NbGraderPreprocessor) -> Path:
    return Path(CourseDirectory(config=preprocessor.config).root)


def _source(preprocessor: NbGraderPreprocessor, assignment: str):
    return nbformat.read(source_notebook(_root(preprocessor), assignment), as_version=4)


RUN_STATUS = "attention_course_status"  # in nbgrader's resources: how the notebook's run went ("ok" or what stopped it)


class ConfinedExecute(NbGraderPreprocessor):
    """Runs the notebook and its harvest notebook (side by side), each in a confined kernel within these limits
    (``c.ConfinedExecute.cell_seconds = 300`` in ``nbgrader_config.py``; the grade command reads the
    same settings). The defaults are ``grading.limits.Limits``'s."""

    cell_seconds = Integer(Limits.cell_seconds, help="Seconds a cell may run; then it is interrupted and fails").tag(config=True)
    notebook_seconds = Integer(Limits.notebook_seconds, help="Seconds the whole notebook may run; then it stops").tag(config=True)
    output_bytes = Integer(Limits.output_bytes, help="Bytes of output kept per cell; the rest is cut").tag(config=True)
    memory_bytes = Integer(Limits.memory_bytes, allow_none=True,
                           help="Bytes of memory a kernel may use (None: no limit)").tag(config=True)
    threads = Integer(Limits.threads, allow_none=True,
                      help="torch threads per kernel (None: torch's default; the grade command shares the cores)").tag(config=True)
    seed = Integer(None, allow_none=True,
                   help="The seed the harvest draws its inputs from (None: drawn now; the grade command chooses one "
                        "per notebook, so that a notebook graded again gets the same inputs)").tag(config=True)

    def limits(self) -> Limits:
        return Limits(cell_seconds=self.cell_seconds, notebook_seconds=self.notebook_seconds, output_bytes=self.output_bytes,
                      memory_bytes=self.memory_bytes, threads=self.threads)

    def preprocess(self, nb, resources):
        assignment = resources["nbgrader"]["assignment"]
        limits, cannot = confined(self.limits())
        for note in cannot:
            self.log.warning(note)
        status = asyncio.run(execute_with_harvest(nb, assignment, _source(self, assignment), shared_zygote(), limits,
                                                  resources["metadata"]["path"], seed=self.seed, side_by_side=True))
        if status != "ok":
            self.log.warning("%s: %s", resources["nbgrader"]["student"], status)
        resources[RUN_STATUS] = status
        return nb, resources


def configured_limits(root: Path) -> Limits:
    """The limits the course's ``nbgrader_config.py`` sets for ``ConfinedExecute`` (its defaults where it sets none)."""
    return ConfinedExecute(config=course_config(root)).limits()


class ApplyVerdicts(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        from attention_course.grading.verdicts.judge import apply_verdicts

        info = resources["nbgrader"]
        found = apply_verdicts(nb, info["assignment"], _source(self, info["assignment"]))
        for item, problem in found.items():
            if problem:
                self.log.info("%s %s: %s", info["student"], item, problem[:200])
        return nb, resources


class _CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's compiled templates, kept in memory for the life of the process (checked against each
    template's source, by jinja)."""

    def __init__(self):
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket):
        self._code[bucket.key] = bucket.bytecode_to_string()


class FeedbackExporter(HTMLExporter):
    """nbconvert's HTML exporter, for nbgrader's feedback pages, compiling its templates once per process
    rather than once per notebook (nbgrader makes an exporter per notebook: 0.06 s of CPU a page)."""

    compiled = _CompiledTemplates()

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = self.compiled
        return environment


AUTOGRADE_PREPROCESSORS = [
    "attention_course.grading.nbgrader_plugin.ConfinedExecute",
    "attention_course.grading.nbgrader_plugin.ApplyVerdicts",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
