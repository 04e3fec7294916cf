"""nbgrader configuration: the repository root is the course directory.

source/<assignment>/ -> release/<assignment>/ (committed) -> submitted/<student>/<assignment>/
-> autograded/ -> feedback/, with gradebook.db beside them (those four are never committed).
"""

import os

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "attention-course"

# A finite limit per cell, so that an endless loop costs one cell, not the whole grading run.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

# A test cell deleted by a student is put back (and run) instead of giving free points or
# leaving the notebook "needing manual grading" forever.
c.OverwriteCells.add_missing_cells = True

# Student versions never carry outputs.
c.ClearOutput.enabled = True

# Feedback shows each test's result but not the hidden tests' code, so they can serve again; a
# student's own text that reads like a hidden-test delimiter is neutralised first, so that it
# cannot stop the feedback of the class.
from attention_course.grading.nbgrader_steps import FEEDBACK_PREPROCESSORS  # noqa: E402

c.GenerateFeedback.preprocessors = FEEDBACK_PREPROCESSORS

# Autograde runs each notebook in a confined kernel with the grader's harvest appended, then judges
# every item in nbgrader's own process from the harvested outputs (attention_course.grading.verdicts):
# the test cells' results in the student's process alone cannot earn points.
from attention_course.grading.nbgrader_plugin import AUTOGRADE_PREPROCESSORS  # noqa: E402

c.Autograde.autograde_preprocessors = AUTOGRADE_PREPROCESSORS
