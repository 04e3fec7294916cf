"""Grading where the class already hands in: a Gradescope autograder and a PrairieLearn external
grader, built by ``build`` (``attention-course package gradescope|prairielearn ASSIGNMENT``), whose entry
points run ``run`` on one submission with the self-grading code path (``selfgrade``)."""
