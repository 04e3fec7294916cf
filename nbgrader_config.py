"""nbgrader configuration: the repository root is the course directory.

source/<assignment>/ -> release/<assignment>/ (committed) -> submitted/<student>/<assignment>/
-> autograded/ -> feedback/, with gradebook.db beside them (those four are never committed).
"""

import os

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "attention-course"

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
c.GenerateFeedback.exporter_class = "attention_course.grading.nbgrader_plugin.FeedbackExporter"

# nbconvert checks the notebook against its schema once a pass, after the last preprocessor, rather
# than after each of them (it still stops a pass that leaves it invalid).
c.Exporter.optimistic_validation = True

# Autograde runs each notebook in a confined kernel with the grader's harvest appended, then judges
# every item in nbgrader's own process from the harvested outputs (attention_course.grading.verdicts):
# the test cells' results in the student's process alone cannot earn points.
from attention_course.grading.nbgrader_plugin import AUTOGRADE_PREPROCESSORS  # noqa: E402

c.Autograde.autograde_preprocessors = AUTOGRADE_PREPROCESSORS

# The limits of each notebook's kernel, for autograde and the grade command alike (the defaults are
# attention_course/grading/limits.py's: 120 s per cell, so that an endless loop costs one cell and not
# the grading run; 600 s per notebook; 1 MB of output per cell; 8 GiB of memory). For example:
# c.ConfinedExecute.cell_seconds = 300

# Late work (attention_course/grading/late.py): nbgrader's own late penalties, with the course's policy.
# A due date and extensions here, or the grade command's --due and --extensions. By default nothing is late.
c.AssignLatePenalties.plugin_class = "attention_course.grading.late.CoursePenalty"
# c.CoursePenalty.per = "hour"          # or "day": each started hour (day) late costs `penalty`
# c.CoursePenalty.penalty = 0.05        # 5% of the notebook's points per hour ...
# c.CoursePenalty.unit = "fraction"     # ... or "points": that many points
# c.CoursePenalty.cap = 0.5             # never more than half (same unit)
# c.CoursePenalty.grace_minutes = 10    # up to 10 minutes late is on time
# c.LateWork.due = {"01_causal_attention": "2026-03-02 23:59 Europe/Berlin"}
# c.LateWork.extensions = "extensions.csv"   # columns: student, and hours or days
