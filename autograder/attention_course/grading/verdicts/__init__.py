"""Verdicts computed outside the student's process: ``judge`` builds the harvest notebook and judges
what it printed; ``quiz`` replays the quiz cells' keys. The exercises' specs are in ``exercises``."""
