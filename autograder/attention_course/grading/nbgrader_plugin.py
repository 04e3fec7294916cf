"""nbgrader's autograde with the course's execution and out-of-process verdicts.

Plain ``nbgrader autograde`` (the repository's ``nbgrader_config.py``, formgrader's button):
``ConfinedExecute`` stands where nbgrader's ``Execute`` stands (the notebook run in a kernel forked
from a zygote, within limits, in a scratch copy of its folder; then the harvest notebook, built from
the student's accepted code, in a fresh kernel of its own), then ``ApplyVerdicts`` judges every item
in nbgrader's own process.

The grading command (class_grading) executes the notebooks beforehand, in parallel, the same way;
``UseExecuted`` hands on the executed copy, and the same ``ApplyVerdicts`` judges it. Either way
nbgrader itself scores the notebook and stores the grades in its gradebook."""

import asyncio
import atexit
from pathlib import Path

import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer, Unicode
from traitlets.config.loader import PyFileConfigLoader

from attention_course.grading.course import source_notebook
from attention_course.grading.execute import execute_with_harvest, mark_unfinished_tests  # noqa: F401 (class_grading's)
from attention_course.grading.limits import Limits, confined

def executed_path(folder: Path, student: str, assignment: str, notebook: str) -> Path:
    return Path(folder) / student / assignment / f"{notebook}.ipynb"


def code_of(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def _root(preprocessor: NbGraderPreprocessor) -> Path:
    return Path(CourseDirectory(config=preprocessor.config).root)


def _source(preprocessor: NbGraderPreprocessor, assignment: str):
    return nbformat.read(source_notebook(_root(preprocessor), assignment), as_version=4)


class UseExecuted(NbGraderPreprocessor):
    executed_folder = Unicode(help="The folder of the notebooks the grade command executed "
                                   "(<student>/<assignment>/<notebook>.ipynb), which nbgrader scores").tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        path = executed_path(self.executed_folder, info["student"], info["assignment"], info["notebook"])
        if path.is_file():
            executed = nbformat.read(path, as_version=4)
            if code_of(executed) == code_of(nb):
                return executed, resources
            reason = "not graded: the executed copy is out of date; grade again"
        else:
            reason = "not graded: the notebook was not executed"
        mark_unfinished_tests(nb, reason)
        return nb, resources


_ZYGOTE = []


def _zygote():
    """One kernel zygote per nbgrader process, closed when it exits."""
    if not _ZYGOTE:
        from attention_course.grading.zygote import Zygote

        _ZYGOTE.append(Zygote())
        atexit.register(_ZYGOTE[0].close)
    return _ZYGOTE[0]


class ConfinedExecute(NbGraderPreprocessor):
    """Runs the notebook, then its harvest notebook, each in a confined kernel within these limits
    (``c.ConfinedExecute.cell_seconds = 300`` in ``nbgrader_config.py``; the grade command reads the
    same settings). The defaults are ``grading.limits.Limits``'s."""

    cell_seconds = Integer(Limits.cell_seconds, help="Seconds a cell may run; then it is interrupted and fails").tag(config=True)
    notebook_seconds = Integer(Limits.notebook_seconds, help="Seconds the whole notebook may run; then it stops").tag(config=True)
    output_bytes = Integer(Limits.output_bytes, help="Bytes of output kept per cell; the rest is cut").tag(config=True)
    memory_bytes = Integer(Limits.memory_bytes, allow_none=True,
                           help="Bytes of memory a kernel may use (None: no limit)").tag(config=True)

    def limits(self) -> Limits:
        return Limits(cell_seconds=self.cell_seconds, notebook_seconds=self.notebook_seconds, output_bytes=self.output_bytes,
                      memory_bytes=self.memory_bytes)

    def preprocess(self, nb, resources):
        assignment = resources["nbgrader"]["assignment"]
        limits, cannot = confined(self.limits())
        for note in cannot:
            self.log.warning(note)
        status = asyncio.run(execute_with_harvest(nb, assignment, _source(self, assignment), _zygote(), limits,
                                                  resources["metadata"]["path"]))
        if status != "ok":
            self.log.warning("%s: %s", resources["nbgrader"]["student"], status)
        return nb, resources


def configured_limits(root: Path) -> Limits:
    """The limits the course's ``nbgrader_config.py`` sets for ``ConfinedExecute`` (its defaults where it sets none)."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return ConfinedExecute(config=config).limits()


class ApplyVerdicts(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        from attention_course.grading.verdicts.judge import apply_verdicts

        info = resources["nbgrader"]
        found = apply_verdicts(nb, info["assignment"], _source(self, info["assignment"]))
        for item, problem in found.items():
            if problem:
                self.log.info("%s %s: %s", info["student"], item, problem[:200])
        return nb, resources


_AFTER_EXECUTION = [
    "attention_course.grading.nbgrader_plugin.ApplyVerdicts",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
AUTOGRADE_PREPROCESSORS = ["attention_course.grading.nbgrader_plugin.ConfinedExecute", *_AFTER_EXECUTION]
EXECUTED_AUTOGRADE_PREPROCESSORS = ["attention_course.grading.nbgrader_plugin.UseExecuted", *_AFTER_EXECUTION]
