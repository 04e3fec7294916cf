"""Grading where the class already hands in: a Gradescope autograder and a PrairieLearn external
grader, built by ``build`` (``attention-course package gradescope|prairielearn ASSIGNMENT``), whose entry
points run ``run`` on one submission with the self-grading code path (``selfgrade``)."""

# Gradescope's visibilities of a test (its autograder specification); here, so that the command line has
# them without importing the grading.
VISIBILITIES = ("after_due_date", "after_published", "visible", "hidden")
