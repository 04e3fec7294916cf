"""Grading: the course's folders and assignments, notebooks' graded cells, the example class,
and self-grading one notebook without nbgrader's database."""
