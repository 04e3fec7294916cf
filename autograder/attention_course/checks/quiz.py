"""Quiz answers: the visible test checks only the form of an answer; the hidden test compares it
with a key computed by code and, for a known wrong value, explains the misconception behind it.

Every check also records its outcome (``OUTCOMES``), before it raises, so that a summary cell at
the end of a notebook can show at a glance which questions were right and what to revisit: in
Colab only the form is known ("answered"); after grading, each answer is right or wrong."""

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from attention_course.checks.diagnosis import follows_the_rules

OUTCOMES: dict[str, tuple[str, str]] = {}
"""Answer name -> (state, message); state is "missing", "answered", "correct" or "wrong"."""


def _record(name: str, state: str, message: str = "") -> str:
    OUTCOMES[name] = (state, message)
    return message


def _fail(name: str, state: str, message: str) -> AssertionError:
    return AssertionError(_record(name, state, message))


def _is_whole_number(answer) -> bool:
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return False
    return float(answer).is_integer()


def check_number(name: str, answer, expected: int | None = None, misconceptions: Mapping[int, str] | None = None) -> None:
    """A whole-number answer. Without ``expected`` only its form is checked."""
    if answer is Ellipsis or answer is None:
        raise _fail(name, "missing", f"{name}: not answered yet")
    if not _is_whole_number(answer):
        raise _fail(name, "missing", f"{name}: answer with a whole number (an int such as 1_048_576), got {answer!r}")
    if expected is None:
        print(f"✓ {name}: answered (checked when graded)")
        _record(name, "answered")
        return
    if int(answer) == expected:
        print(f"✓ {name}: correct")
        _record(name, "correct")
        return
    why = (misconceptions or {}).get(int(answer), "")
    raise _fail(name, "wrong", f"{name}: {int(answer):,} is not right. {why}".rstrip())


def check_choice(name: str, answer, choices: str, expected: str | None = None,
                 explanations: Mapping[str, str] | None = None) -> None:
    """A multiple-choice answer: one letter of ``choices``. Without ``expected`` only its form is checked."""
    if answer is Ellipsis or answer is None:
        raise _fail(name, "missing", f"{name}: not answered yet")
    letter = answer.strip().upper() if isinstance(answer, str) else None
    if letter is None or len(letter) != 1 or letter not in choices:
        raise _fail(name, "missing", f"{name}: answer with one letter of {', '.join(choices)} (a string such as 'A'), got {answer!r}")
    if expected is None:
        print(f"✓ {name}: answered (checked when graded)")
        _record(name, "answered")
        return
    if letter == expected:
        print(f"✓ {name}: correct")
        _record(name, "correct")
        return
    why = (explanations or {}).get(letter, "")
    raise _fail(name, "wrong", f"{name}: {letter} is not right. {why}".rstrip())


def check_formula(name: str, formula, configs: Sequence[tuple], expected: Callable[..., int] | None = None,
                  misconceptions: Mapping[str, Callable[..., int]] | None = None) -> None:
    """A formula written as a function, called on every configuration of ``configs``.

    Without ``expected`` only its form is checked (it runs on the first configuration and returns
    a whole number). With it, ``formula(*config) == expected(*config)`` on all of them; when not,
    the misconception whose formula gives the same numbers on every configuration is named."""
    if formula is Ellipsis or formula is None or not callable(formula):
        raise _fail(name, "missing", f"{name}: not answered yet (define it as a function)")
    try:
        follows_the_rules(formula, name)
    except AssertionError as breach:
        raise _fail(name, "wrong", str(breach)) from None
    answers = []
    for config in configs if expected is not None else configs[:1]:
        call = f"{name}{tuple(config)}"
        try:
            answer = formula(*config)
        except NotImplementedError:
            raise _fail(name, "missing", f"{name}: not answered yet (it raised NotImplementedError)") from None
        except Exception as error:
            raise _fail(name, "wrong", f"{call} raised {type(error).__name__}: {error}") from None
        if not _is_whole_number(answer):
            raise _fail(name, "missing" if expected is None else "wrong", f"{call} should return a whole number, got {answer!r}")
        answers.append(int(answer))
    if expected is None:
        print(f"✓ {name}: answered (checked when graded)")
        _record(name, "answered")
        return
    keys = [expected(*config) for config in configs]
    wrong = [(config, answer, key) for config, answer, key in zip(configs, answers, keys) if answer != key]
    if not wrong:
        print(f"✓ {name}: correct on {len(configs)} configurations")
        _record(name, "correct")
        return
    config, answer, key = wrong[0]
    why = next((message for message, mistake in (misconceptions or {}).items()
                if all(mistake(*c) == a for c, a in zip(configs, answers))), "")
    raise _fail(name, "wrong", f"{name}{tuple(config)} = {answer:,}, but it is {key:,} ({len(wrong)} of {len(configs)} "
                               f"configurations wrong). {why}".rstrip())


@dataclass(frozen=True)
class Question:
    title: str
    answers: tuple[str, ...]  # the names its test cells check, one point each
    idea: str  # what to revisit when an answer is wrong
    lesson: str  # a link to where that idea is taught


def summary_markdown(questions: Sequence[Question]) -> str:
    """A table of the quiz, points per question, then the ideas to revisit with links (Markdown)."""
    rows = ["| question | points | answers |", "|---|---|---|"]
    revisit, total, earned, graded = [], 0, 0, True
    for q in questions:
        states = [OUTCOMES.get(name, ("missing", ""))[0] for name in q.answers]
        right = states.count("correct")
        total += len(states)
        earned += right
        checked = "answered" not in states
        graded = graded and checked
        shown = ", ".join(f"`{n}` {s}" for n, s in zip(q.answers, states) if s != "correct") or "all correct"
        rows.append(f"| {q.title} | {right if checked else '?'} / {len(states)} | {shown} |")
        if any(s in ("wrong", "missing") for s in states):
            revisit.append(f"- **{q.title}**: {q.idea} ([lesson]({q.lesson}))")
    head = (f"**Quiz: {earned} / {total} points.**" if graded else
            f"**Quiz: {total} points; the values are checked when graded** (a clone of the course grades it now: "
            "`attention-course grade-notebook quiz.ipynb`).")
    return "\n".join([head, "", *rows, "", "**To revisit**" if revisit else "Nothing to revisit.", *revisit])


def show_summary(questions: Sequence[Question]) -> None:
    """Display ``summary_markdown``: rendered in Colab, Jupyter and nbgrader's feedback pages."""
    from IPython.display import display

    text = summary_markdown(questions)
    display({"text/markdown": text, "text/plain": text}, raw=True)
