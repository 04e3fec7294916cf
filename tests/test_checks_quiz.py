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


def test_flop_keys_of_05_quiz_come_from_counted_flops():
    """Q4d-Q4g of 05_quiz: the hidden tests' keys, replayed as the grader replays them, agree with the FLOPs that
    FlopCounterMode counts on a GPT-2 block and with the formulas lesson 02 checks against it."""
    import nbformat

    from attention_course.gpt2_forward import count_flops, gpt2_block
    from attention_course.grading.course import source_notebook
    from attention_course.grading.verdicts.quiz import quiz_keys
    from course_copy import ROOT

    keys = quiz_keys(nbformat.read(source_notebook(ROOT, "05_quiz"), as_version=4))
    hidden = {cell: [call for call in calls if len(call.args) > 3] for cell, calls in keys.items()}
    assert {cell: [call.args[3] for call in hidden[cell]] for cell in ("test_q4d", "test_q4e", "test_q4f")} == {
        "test_q4d": ["B"], "test_q4e": ["C"], "test_q4f": ["B"]}
    (crossover,) = hidden["test_q4g"]
    D = 768
    block = gpt2_block(D, 12, device="meta")
    cached, uncached = count_flops(block, 1, n_cached=999), count_flops(block, 1000)
    assert (cached.projections_mlp, cached.attention) == (24 * D * D, 4 * 1000 * D)  # B: 14,155,776 > 3,072,000
    assert (uncached.projections_mlp, uncached.attention) == (24 * 1000 * D * D, 4 * 1000 * 1000 * D)  # B, even dense
    assert count_flops(block, 2000).attention == 4 * uncached.attention  # C: quadratic
    widths = crossover.configs
    assert crossover.args[3](768) == 9216 and all(crossover.args[3](width) == 12 * width for (width,) in widths)
    # The crossover is where causal attention, 2 T (T + 1) D counted over cached steps, meets 24 T D^2 (exactly at 12 D - 1).
    t = 12 * D - 1
    assert count_flops(block, t).projections_mlp == 2 * t * (t + 1) * D
