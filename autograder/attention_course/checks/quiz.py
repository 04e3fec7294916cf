"""Quiz answers: the visible test checks only the form of an answer; the hidden test compares it
with a key computed by code and, for a known wrong value, explains the misconception behind it."""

import numbers
from collections.abc import Mapping


def _is_whole_number(answer) -> bool:
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return False
    return float(answer).is_integer()


def check_number(name: str, answer, expected: int | None = None, misconceptions: Mapping[int, str] | None = None) -> None:
    """A whole-number answer. Without ``expected`` only its form is checked."""
    if answer is Ellipsis or answer is None:
        raise AssertionError(f"{name}: not answered yet")
    if not _is_whole_number(answer):
        raise AssertionError(f"{name}: answer with a whole number (an int such as 1_048_576), got {answer!r}")
    if expected is None:
        print(f"✓ {name}: answered (checked when graded)")
        return
    if int(answer) == expected:
        print(f"✓ {name}: correct")
        return
    why = (misconceptions or {}).get(int(answer), "")
    raise AssertionError(f"{name}: {int(answer):,} is not right. {why}".rstrip())


def check_choice(name: str, answer, choices: str, expected: str | None = None,
                 explanations: Mapping[str, str] | None = None) -> None:
    """A multiple-choice answer: one letter of ``choices``. Without ``expected`` only its form is checked."""
    if answer is Ellipsis or answer is None:
        raise AssertionError(f"{name}: not answered yet")
    letter = answer.strip().upper() if isinstance(answer, str) else None
    if letter is None or len(letter) != 1 or letter not in choices:
        raise AssertionError(f"{name}: answer with one letter of {', '.join(choices)} (a string such as 'A'), got {answer!r}")
    if expected is None:
        print(f"✓ {name}: answered (checked when graded)")
        return
    if letter == expected:
        print(f"✓ {name}: correct")
        return
    why = (explanations or {}).get(letter, "")
    raise AssertionError(f"{name}: {letter} is not right. {why}".rstrip())
