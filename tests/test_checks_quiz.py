"""Quiz checks (checks/quiz.py): form only without a key, the misconception named with one, and the
outcomes recorded for the summary, before a failure is raised."""

import pytest

from attention_course.checks import quiz
from attention_course.model_configs import meta_llama_attention, projection_params


@pytest.fixture(autouse=True)
def fresh_outcomes():
    quiz.OUTCOMES.clear()
    yield
    quiz.OUTCOMES.clear()


def kv_params_of(d_model, n_heads, n_kv_heads):
    return projection_params(meta_llama_attention(d_model, n_heads, n_kv_heads), "k_proj", "v_proj")


GROUPS = [(768, 12, 4), (1024, 8, 8), (8192, 64, 8), (3072, 24, 4)]
SEED = {"the study notebook's 2 * D * D / G": lambda D, H, G: 2 * D * D // G}


def test_formula_right_on_every_configuration():
    quiz.check_formula("kv_params_gqa", lambda D, H, G: 2 * D * G * (D // H), GROUPS, kv_params_of, SEED)
    assert quiz.OUTCOMES["kv_params_gqa"][0] == "correct"


def test_formula_misconception_is_named_even_where_it_agrees_by_chance():
    # Llama-2-70B's shapes (G * G = H) make 2 * D * D / G right by coincidence; the other shapes give it away.
    with pytest.raises(AssertionError, match=r"3 of 4 configurations wrong\)\. the study notebook's 2 \* D \* D / G"):
        quiz.check_formula("kv_params_gqa", SEED["the study notebook's 2 * D * D / G"], GROUPS, kv_params_of, SEED)
    assert quiz.OUTCOMES["kv_params_gqa"][0] == "wrong"


def test_formula_form_only_without_a_key():
    quiz.check_formula("f", lambda D, H, G: 1, GROUPS)
    assert quiz.OUTCOMES["f"][0] == "answered"
    for formula, phrase in [(..., "not answered yet"), (lambda *a: 1.5, "whole number"), (lambda *a: 1 / 0, "ZeroDivisionError")]:
        with pytest.raises(AssertionError, match=phrase):
            quiz.check_formula("f", formula, GROUPS)


def test_unimplemented_formula_is_not_answered():
    def formula(D, H, G):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not answered yet"):
        quiz.check_formula("f", formula, GROUPS)
    assert quiz.OUTCOMES["f"][0] == "missing"


def test_numbers_and_choices_record_their_outcome():
    quiz.check_number("n", 4)
    quiz.check_choice("c", "b", "ABCD", "B")
    with pytest.raises(AssertionError, match="That is half"):
        quiz.check_number("m", 2, 4, {2: "That is half."})
    assert {k: v[0] for k, v in quiz.OUTCOMES.items()} == {"n": "answered", "c": "correct", "m": "wrong"}


def test_summary_before_and_after_grading():
    questions = [quiz.Question("Q1", ("a", "b"), "idea one", "https://example.org/01"),
                 quiz.Question("Q2", ("c",), "idea two", "https://example.org/02")]
    quiz.check_number("a", 1)
    quiz.check_number("b", 1)
    quiz.check_number("c", 1)
    before = quiz.summary_markdown(questions)
    assert "checked when graded" in before and "| Q1 | ? / 2 |" in before and "Nothing to revisit" in before
    quiz.check_number("a", 1, 1)
    quiz.check_number("c", 1, 1)
    with pytest.raises(AssertionError):
        quiz.check_number("b", 1, 2)
    after = quiz.summary_markdown(questions)
    assert "**Quiz: 2 / 3 points.**" in after and "| Q1 | 1 / 2 | `b` wrong |" in after and "| Q2 | 1 / 1 | all correct |" in after
    assert "**Q1**: idea one ([lesson](https://example.org/01))" in after and "idea two" not in after
