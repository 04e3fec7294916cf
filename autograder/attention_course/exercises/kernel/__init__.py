"""The kernel half of every exercise: how its inputs are drawn from a seed and how the student's
code is called, and the harvest that reports what it returned.

The grader ships these modules as source into the harvest kernel, where the rest of the package
(reference kernels, checks, grading) is absent. So they import only torch, numpy, the standard
library, each other, and the objects a notebook hands over (``AssignmentRecord.handed_over``);
``tests/test_assignment_record.py`` holds them to it. The notebooks' checks run the same code in the
student's own process.
"""
