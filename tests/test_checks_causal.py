"""The checks that the 01_causal_attention notebook's test cells call
(attention_course/checks/causal_attention.py).

- The reference kernels pass, quick and thorough.
- Correct solutions written differently pass (einsum, float64 inside, a loop over heads, ...).
- Each typical mistake fails with an AssertionError whose message names it: every test asserts a
  distinctive substring, so it fails if the diagnosis changes.

The "student" functions below are written the way a learner would write them, independently of
the checker's own mistake models.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from attention_course.checks import causal_attention as checks
from attention_course.exercises import compare
from attention_course.kernels import causal as ref

CHECKS = {
    "causal_mask": checks.check_causal_mask,
    "attention_weights": checks.check_attention_weights,
    "attention": checks.check_attention,
    "gpt2_attention": checks.check_gpt2_attention,
}


def run_check(name: str, fn, thorough: bool = False):
    if name == "split_merge":
        split_heads, merge_heads = fn
        return checks.check_split_merge(split_heads, merge_heads, thorough=thorough)
    return CHECKS[name](fn, thorough=thorough)


def expect_failure(name: str, fn, substring: str, thorough: bool = False) -> str:
    with pytest.raises(AssertionError) as info:
        run_check(name, fn, thorough=thorough)
    message = str(info.value)
    assert substring in message, f"diagnosis changed; got: {message}"
    return message


# ----------------------------------------------------------------------------------------------
# Correct solutions, written differently
# ----------------------------------------------------------------------------------------------


def mask_tril(n_queries, n_keys, device=None):
    if n_queries > n_keys:
        raise ValueError("more queries than keys")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries)


def mask_triu_complement(n_queries, n_keys, device=None):
    if n_queries > n_keys:
        raise ValueError("n_queries > n_keys")
    future = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).triu(diagonal=n_keys - n_queries + 1)
    return ~future


def weights_einsum(q, k, causal=True):
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    scores = torch.einsum("...id,...jd->...ij", q, k) * q.shape[-1] ** -0.5
    if causal:
        scores = scores.masked_fill(~mask_tril(n_queries, n_keys, device=q.device), float("-inf"))
    return scores.softmax(dim=-1)


def weights_float64_inside(q, k, causal=True):
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~mask_triu_complement(q.shape[-2], k.shape[-2], q.device), -math.inf)
    return torch.softmax(scores, dim=-1).to(q.dtype)


def weights_finfo_min(q, k, causal=True):
    """masked_fill with the dtype's minimum instead of -inf: exp underflows to exactly 0, so the
    masked entries are exactly 0 (the contract) and this is a correct solution."""
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~mask_tril(q.shape[-2], k.shape[-2], q.device), torch.finfo(scores.dtype).min)
    return torch.softmax(scores.float(), dim=-1).to(q.dtype)


def weights_mask_after_softmax_renormalized(q, k, causal=True):
    """Mask after the softmax, then renormalize: the same weights as masking before it."""
    weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    if causal:
        weights = weights * mask_tril(q.shape[-2], k.shape[-2], q.device)
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights


def attention_einsum(q, k, v, causal=True):
    return torch.einsum("...ij,...jd->...id", weights_einsum(q, k, causal), v)


def attention_float64_inside(q, k, v, causal=True):
    return (weights_float64_inside(q, k, causal).double() @ v.double()).to(q.dtype)


def attention_sdpa(q, k, v, causal=True):
    mask = mask_tril(q.shape[-2], k.shape[-2], q.device) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def merge_flatten(x):
    return x.transpose(1, 2).flatten(2)


def split_permute(x, n_heads):
    batch, length, width = x.shape
    return x.reshape(batch, length, n_heads, width // n_heads).permute(0, 2, 1, 3)


def merge_permute(x):
    batch, n_heads, length, head_dim = x.shape
    return x.permute(0, 2, 1, 3).contiguous().view(batch, length, n_heads * head_dim)


def gpt2_loop_over_heads(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    width = x.shape[-1]
    head_dim = width // n_heads
    qkv = x @ c_attn_weight + c_attn_bias
    q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
    outputs = []
    for h in range(n_heads):
        features = slice(h * head_dim, (h + 1) * head_dim)
        outputs.append(attention_float64_inside(q[..., features], k[..., features], v[..., features]))
    return torch.cat(outputs, dim=-1) @ c_proj_weight + c_proj_bias


def gpt2_linear_sdpa(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    """nn.functional.linear wants [out, in]: transpose Conv1D's [in, out] weights. SDPA with
    is_causal=True is right here because Tq == Tk."""
    qkv = F.linear(x, c_attn_weight.T, c_attn_bias)
    q, k, v = (split_unflatten(t, n_heads) for t in qkv.chunk(3, dim=-1))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(merge_flatten(y), c_proj_weight.T, c_proj_bias)


CORRECT = [
    ("causal_mask", ref.causal_mask),
    ("causal_mask", mask_tril),
    ("causal_mask", mask_triu_complement),
    ("attention_weights", ref.attention_weights),
    ("attention_weights", weights_einsum),
    ("attention_weights", weights_float64_inside),
    ("attention_weights", weights_finfo_min),
    ("attention_weights", weights_mask_after_softmax_renormalized),
    ("attention", ref.attention),
    ("attention", ref.fused_attention),
    ("attention", attention_einsum),
    ("attention", attention_float64_inside),
    ("attention", attention_sdpa),
    ("split_merge", (ref.split_heads, ref.merge_heads)),
    ("split_merge", (split_unflatten, merge_flatten)),
    ("split_merge", (split_permute, merge_permute)),
    ("gpt2_attention", ref.gpt2_attention),
    ("gpt2_attention", gpt2_loop_over_heads),
    ("gpt2_attention", gpt2_linear_sdpa),
]


def solution_id(case) -> str:
    name, fn = case
    fns = fn if isinstance(fn, tuple) else (fn,)
    return f"{name}-{'+'.join(f.__module__.split('.')[-1] + '.' + f.__name__ for f in fns)}"


@pytest.mark.parametrize("thorough", [False, True], ids=["quick", "thorough"])
@pytest.mark.parametrize("case", CORRECT, ids=[solution_id(c) for c in CORRECT])
def test_correct_solutions_pass(case, thorough, capsys):
    name, fn = case
    run_check(name, fn, thorough=thorough)
    assert "✓" in capsys.readouterr().out


def test_passed_line_names_the_check(capsys):
    checks.check_attention(ref.attention)
    # 4 float32 shapes, one float16 and one bfloat16 case, causal and not; and the meta-device case
    expected = 2 * (4 + 2) + 1
    assert capsys.readouterr().out.strip() == f"✓ attention: {expected} cases passed"


# ----------------------------------------------------------------------------------------------
# Typical mistakes: attention_weights / attention / causal_mask
# ----------------------------------------------------------------------------------------------


def scores_of(q, k, scale=True):
    scores = q @ k.transpose(-2, -1)
    return scores / math.sqrt(q.shape[-1]) if scale else scores


def allowed_bottom_right(q, k):
    return ref.causal_mask(q.shape[-2], k.shape[-2], device=q.device)


def w_no_scale(q, k, causal=True):
    scores = scores_of(q, k, scale=False)
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(-1)


def w_divide_by_d(q, k, causal=True):
    scores = q @ k.mT / q.shape[-1]
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(-1)


def w_softmax_dim_minus_2(q, k, causal=True):
    scores = scores_of(q, k)
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(dim=-2)


def w_top_left(q, k, causal=True):
    scores = scores_of(q, k)
    if causal:
        top_left = torch.tril(torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device))
        scores = scores.masked_fill(~top_left, float("-inf"))
    return scores.softmax(-1)


def w_no_mask(q, k, causal=True):
    return scores_of(q, k).softmax(-1)


def w_strict(q, k, causal=True):
    scores = scores_of(q, k)
    if causal:
        n_queries, n_keys = q.shape[-2], k.shape[-2]
        strict = torch.ones(n_queries, n_keys, dtype=torch.bool, device=q.device).tril(diagonal=n_keys - n_queries - 1)
        scores = scores.masked_fill(~strict, float("-inf"))
    return scores.softmax(-1)


def w_mask_after_softmax(q, k, causal=True):
    weights = scores_of(q, k).softmax(-1)
    return weights * allowed_bottom_right(q, k) if causal else weights


def w_masked_with_zero(q, k, causal=True):
    scores = scores_of(q, k)
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), 0.0)
    return scores.softmax(-1)


def w_causal_flag_ignored(q, k, causal=True):
    return ref.attention_weights(q, k, causal=True)


def w_large_negative_not_exact_zero(q, k, causal=True):
    """-50 instead of -inf: close to the reference within tolerance, but masked weights ~1e-22, not 0."""
    scores = scores_of(q, k)
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), -50.0)
    return scores.softmax(-1)


def w_lookahead(q, k, causal=True):
    """tril with one diagonal too many: each query also sees the next key."""
    scores = scores_of(q, k)
    if causal:
        n_queries, n_keys = q.shape[-2], k.shape[-2]
        allowed = torch.ones(n_queries, n_keys, dtype=torch.bool, device=q.device).tril(diagonal=n_keys - n_queries + 1)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1)


def w_filled_allowed(q, k, causal=True):
    """masked_fill with the allowed positions (a tril mask used as if True meant 'hide')."""
    scores = scores_of(q, k)
    if causal:
        scores = scores.masked_fill(allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(-1)


def w_masked_fill_not_assigned(q, k, causal=True):
    """scores.masked_fill(...) whose result is thrown away: no mask at all."""
    scores = scores_of(q, k)
    if causal:
        scores.masked_fill(~allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(-1)


def w_fill_minus_1e9(q, k, causal=True):
    """The Annotated Transformer's masked_fill(mask == 0, -1e9): fine in float32, an overflow in float16."""
    scores = scores_of(q, k)
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), -1e9)
    return scores.softmax(-1)


def a_scaled_by_value_size(q, k, v, causal=True):
    """Hugging Face GPT-2's _attn: attn_weights / value.size(-1) ** 0.5, right only when dv == dk."""
    scores = q @ k.transpose(-2, -1) / v.size(-1) ** 0.5
    if causal:
        scores = scores.masked_fill(~allowed_bottom_right(q, k), float("-inf"))
    return scores.softmax(-1) @ v


def w_float64_output(q, k, causal=True):
    return ref.attention_weights(q.double(), k.double(), causal)


def w_returns_list(q, k, causal=True):
    return ref.attention_weights(q, k, causal).tolist()


def w_no_value_error(q, k, causal=True):
    if q.shape[-2] > k.shape[-2]:
        return torch.zeros(*q.shape[:-1], k.shape[-2], dtype=q.dtype)
    return ref.attention_weights(q, k, causal)


def with_values(weights_fn):
    def attention(q, k, v, causal=True):
        return weights_fn(q, k, causal) @ v

    attention.__name__ = f"attention_from_{weights_fn.__name__}"
    return attention


def a_returns_weights(q, k, v, causal=True):
    return ref.attention_weights(q, k, causal)


def a_weights_times_keys(q, k, v, causal=True):
    return ref.attention_weights(q, k, causal) @ k


def a_wrong_dtype(q, k, v, causal=True):
    return ref.attention(q.double(), k.double(), v.double(), causal)


def not_implemented(*args, **kwargs):
    raise NotImplementedError


def m_top_left(n_queries, n_keys, device=None):
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()


def m_strict(n_queries, n_keys, device=None):
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries - 1)


def m_inverted(n_queries, n_keys, device=None):
    return ~ref.causal_mask(n_queries, n_keys, device)


def m_transposed(n_queries, n_keys, device=None):
    i = torch.arange(n_queries, device=device)[:, None]
    j = torch.arange(n_keys, device=device)[None, :]
    return j >= i + (n_keys - n_queries)


def m_lookahead(n_queries, n_keys, device=None):
    """The future marked with triu(diagonal=Tk - Tq + 2) instead of + 1: one key too many allowed."""
    if n_queries > n_keys:
        raise ValueError("more queries than keys")
    return ~torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).triu(diagonal=n_keys - n_queries + 2)


def m_float(n_queries, n_keys, device=None):
    return ref.causal_mask(n_queries, n_keys, device).float()


def m_no_value_error(n_queries, n_keys, device=None):
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries)


MASK_MISTAKES = [
    ("top-left", m_top_left, "aligned top-left"),
    ("strict", m_strict, "mask off by one"),
    ("inverted", m_inverted, "the mask is inverted"),
    ("transposed", m_transposed, "the mask is transposed"),
    ("one key into the future", m_lookahead, "mask off by one the other way"),
    ("float mask", m_float, "return a bool tensor"),
    ("no ValueError", m_no_value_error, "should raise ValueError for more queries than keys, but returned normally"),
    ("not implemented", not_implemented, "not implemented yet"),
]

WEIGHT_MISTAKES = [
    ("no 1/sqrt(d) scale", w_no_scale, "the scores were not scaled"),
    ("divided by d", w_divide_by_d, "divided by head_dim instead of sqrt(head_dim)"),
    ("softmax over dim=-2", w_softmax_dim_minus_2, "softmax over the wrong axis"),
    ("top-left mask", w_top_left, "aligned top-left"),
    ("no mask", w_no_mask, "future tokens leak"),
    ("strict mask", w_strict, "mask off by one"),
    ("one key into the future", w_lookahead, "mask off by one the other way"),
    ("fill -1e9 overflows float16", w_fill_minus_1e9, "does not fit in float16"),
    ("mask filled where allowed", w_filled_allowed, "the mask is used the wrong way round"),
    ("masked_fill result not assigned", w_masked_fill_not_assigned, "masked_fill returns a new tensor"),
    ("mask after softmax", w_mask_after_softmax, "the mask was applied after the softmax"),
    ("masked with 0", w_masked_with_zero, "masked scores were set to 0 instead of -inf"),
    ("causal flag ignored", w_causal_flag_ignored, "causal=False must give full attention"),
    ("large negative fill", w_large_negative_not_exact_zero, "masked entries must be exactly 0"),
    ("float64 output", w_float64_output, "output dtype torch.float64, expected torch.float32"),
    ("returns a list", w_returns_list, "should return a torch.Tensor, got list"),
    ("not implemented", not_implemented, "not implemented yet (it raised NotImplementedError)"),
]

ATTENTION_MISTAKES = [
    ("no 1/sqrt(d) scale", with_values(w_no_scale), "the scores were not scaled"),
    ("softmax over dim=-2", with_values(w_softmax_dim_minus_2), "softmax over the wrong axis"),
    ("top-left mask", with_values(w_top_left), "aligned top-left"),
    ("no mask", with_values(w_no_mask), "future tokens leak"),
    ("strict mask", with_values(w_strict), "mask off by one"),
    ("one key into the future", with_values(w_lookahead), "mask off by one the other way"),
    ("fill -1e9 overflows float16", with_values(w_fill_minus_1e9), "does not fit in float16"),
    ("scaled by sqrt(dv) (HF GPT-2's _attn)", a_scaled_by_value_size, "scaled by the size of v's heads"),
    ("mask after softmax", with_values(w_mask_after_softmax), "the mask was applied after the softmax"),
    ("masked with 0", with_values(w_masked_with_zero), "masked scores were set to 0 instead of -inf"),
    ("causal flag ignored", with_values(w_causal_flag_ignored), "causal=False must give full attention"),
    ("returns the weights", a_returns_weights, "the output is the attention weights: multiply them by v"),
    ("weights times keys", a_weights_times_keys, "the weights multiply the keys, not the values"),
    ("float64 output", a_wrong_dtype, "output dtype torch.float64, expected torch.float32"),
    ("not implemented", not_implemented, "not implemented yet"),
]


def as_params(cases):
    """(id, *values) tuples or pytest.param(id, *values, marks=...) -> params with ids."""
    params = []
    for case in cases:
        values, marks = (case.values, case.marks) if hasattr(case, "marks") else (case, ())
        params.append(pytest.param(*values[1:], id=values[0], marks=marks))
    return params


@pytest.mark.parametrize("fn, substring", as_params(MASK_MISTAKES))
def test_causal_mask_mistakes_are_named(fn, substring):
    expect_failure("causal_mask", fn, substring)


@pytest.mark.parametrize("fn, substring", as_params(WEIGHT_MISTAKES))
def test_attention_weights_mistakes_are_named(fn, substring):
    expect_failure("attention_weights", fn, substring)


@pytest.mark.parametrize("fn, substring", as_params(ATTENTION_MISTAKES))
def test_attention_mistakes_are_named(fn, substring):
    expect_failure("attention", fn, substring)


@pytest.mark.parametrize("thorough", [False, True], ids=["quick", "thorough"])
def test_attention_weights_wants_a_value_error_visible_and_hidden(thorough):
    expect_failure(
        "attention_weights", w_no_value_error, "should raise ValueError for more queries than keys", thorough=thorough
    )


def test_scale_by_value_size_is_told_apart_only_because_dv_differs():
    """The check's inputs have dv != dk; with dv == dk the same code is right (GPT-2's case)."""
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(a_scaled_by_value_size(q, k, v), ref.attention(q, k, v))
    message = expect_failure("attention", a_scaled_by_value_size, "scaled by the size of v's heads")
    assert "value.size(-1) ** 0.5" in message


def test_failure_message_names_the_case():
    message = expect_failure("attention_weights", w_top_left, "aligned top-left")
    # the failing case is the first with fewer queries than keys, and the message says which
    assert message.startswith("attention_weights(q(2, 3, 8), k(2, 7, 8), causal=True)")
    assert "torch.float32" in message


@pytest.mark.parametrize("thorough", [False, True], ids=["quick", "thorough"])
def test_mistakes_in_low_precision_are_named_too(thorough):
    """A half-precision-only bug: the same mistakes are diagnosed in float16 / bfloat16 cases."""

    def wrong_only_in_half(q, k, causal=True):
        if q.dtype in (torch.float16, torch.bfloat16):
            return w_no_scale(q, k, causal)
        return ref.attention_weights(q, k, causal)

    message = expect_failure("attention_weights", wrong_only_in_half, "the scores were not scaled", thorough=thorough)
    assert "torch.float16" in message  # visible checks run one float16 and one bfloat16 case too


# ----------------------------------------------------------------------------------------------
# Typical mistakes: split_heads / merge_heads
# ----------------------------------------------------------------------------------------------


def split_no_transpose(x, n_heads):
    batch, length, width = x.shape
    return x.view(batch, n_heads, length, width // n_heads)


def split_interleaved(x, n_heads):
    batch, length, width = x.shape
    return x.view(batch, length, width // n_heads, n_heads).permute(0, 3, 1, 2)


def merge_no_transpose(x):
    batch, n_heads, length, head_dim = x.shape
    return x.reshape(batch, length, n_heads * head_dim)


def merge_view_after_transpose(x):
    batch, n_heads, length, head_dim = x.shape
    return x.transpose(1, 2).view(batch, length, n_heads * head_dim)


SPLIT_MERGE_MISTAKES = [
    ("split_heads without transpose", (split_no_transpose, ref.merge_heads), "reshaped straight to [B, H, T, d]"),
    ("split_heads interleaved", (split_interleaved, ref.merge_heads), "heads are interleaved"),
    ("merge_heads without transpose", (ref.split_heads, merge_no_transpose), "merged without moving the head axis back"),
    ("merge_heads view after transpose", (ref.split_heads, merge_view_after_transpose), "the tensor is not contiguous"),
    ("split not implemented", (not_implemented, ref.merge_heads), "split_heads(x(2, 5, 12), n_heads=3): not implemented yet"),
    ("merge not implemented", (ref.split_heads, not_implemented), "merge_heads(x(2, 3, 5, 4)): not implemented yet"),
]


@pytest.mark.parametrize("fns, substring", as_params(SPLIT_MERGE_MISTAKES))
def test_split_merge_mistakes_are_named(fns, substring):
    expect_failure("split_merge", fns, substring)


# ----------------------------------------------------------------------------------------------
# Typical mistakes: gpt2_attention
# ----------------------------------------------------------------------------------------------


def make_gpt2(*, order="qkv", transpose_split=True, scale=True, mask=True, attn_bias=True, proj_bias=True,
              project=True, proj_weight_transposed=False):
    """A learner's gpt2_attention with one switch flipped: the code a mistake would produce."""

    def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
        batch, length, width = x.shape
        head_dim = width // n_heads
        qkv = x @ c_attn_weight
        if attn_bias:
            qkv = qkv + c_attn_bias
        parts = dict(zip("qkv", qkv.split(width, dim=-1)))
        q, k, v = (parts[name] for name in order)
        if transpose_split:
            q, k, v = (t.view(batch, length, n_heads, head_dim).transpose(1, 2) for t in (q, k, v))
        else:
            q, k, v = (t.reshape(batch, n_heads, length, head_dim) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(head_dim)
        if mask:
            future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
        y = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        if not project:
            return y
        y = y @ (c_proj_weight.T if proj_weight_transposed else c_proj_weight)
        return y + c_proj_bias if proj_bias else y

    return gpt2_attention


def gpt2_wrong_dtype(x, *weights_and_heads):
    return ref.gpt2_attention(x.double(), *(w.double() for w in weights_and_heads[:4]), weights_and_heads[4])


GPT2_MISTAKES = [
    ("c_proj weight transposed", make_gpt2(proj_weight_transposed=True), "Conv1D weights used transposed"),
    ("q/k swapped", make_gpt2(order="kqv"), "q and k swapped"),
    ("k/v swapped", make_gpt2(order="qvk"), "k and v swapped"),
    ("split without transpose", make_gpt2(transpose_split=False), "heads split without the transpose"),
    ("no 1/sqrt(d) scale", make_gpt2(scale=False), "the scores were not scaled"),
    ("no causal mask", make_gpt2(mask=False), "future tokens leak"),
    ("forgot c_attn bias", make_gpt2(attn_bias=False), "the c_attn bias was not added"),
    ("forgot c_proj bias", make_gpt2(proj_bias=False), "the c_proj bias was not added"),
    ("no output projection", make_gpt2(project=False), "the output projection c_proj was not applied"),
    ("float64 output", gpt2_wrong_dtype, "output dtype torch.float64, expected torch.float32"),
    ("not implemented", not_implemented, "not implemented yet"),
]


def test_gpt2_mistake_model_is_correct_with_no_switch_flipped():
    """The switchboard above is a correct solution when nothing is flipped (so each failure is the mistake)."""
    checks.check_gpt2_attention(make_gpt2(), thorough=True)


@pytest.mark.parametrize("fn, substring", as_params(GPT2_MISTAKES))
def test_gpt2_attention_mistakes_are_named(fn, substring):
    expect_failure("gpt2_attention", fn, substring)


def gpt2_softmax_in_float32(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    """Correct for every dtype the contract names (float32, float16, bfloat16): it upcasts the
    scores to float32 for the softmax, as Hugging Face's own upcast path does."""
    width = x.shape[-1]
    q, k, v = (ref.split_heads(t, n_heads) for t in (x @ c_attn_weight + c_attn_bias).split(width, dim=-1))
    scores = (q @ k.mT / math.sqrt(q.shape[-1])).float()
    scores = scores.masked_fill(~ref.causal_mask(q.shape[-2], k.shape[-2], device=x.device), float("-inf"))
    y = scores.softmax(dim=-1).to(v.dtype) @ v
    return ref.merge_heads(y) @ c_proj_weight + c_proj_bias


def test_gpt2_attention_float32_softmax_passes_thorough():
    run_check("gpt2_attention", gpt2_softmax_in_float32, thorough=False)
    run_check("gpt2_attention", gpt2_softmax_in_float32, thorough=True)


def test_gpt2_attention_thorough_compares_with_hugging_face():
    """A solution right on the checker's own fixtures but wrong elsewhere would still be caught by
    the Hugging Face comparison; here: one that is wrong only at the comparison's width (48)."""

    def wrong_at_width_48(x, *args):
        if x.shape[-1] == 48:
            return make_gpt2(attn_bias=False)(x, *args)
        return ref.gpt2_attention(x, *args)

    run_check("gpt2_attention", wrong_at_width_48, thorough=False)
    expect_failure(
        "gpt2_attention", wrong_at_width_48, "gpt2_attention vs Hugging Face GPT2Attention (same weights, float32)",
        thorough=True,
    )


# ----------------------------------------------------------------------------------------------
# Wrong device
# ----------------------------------------------------------------------------------------------


def test_an_output_on_another_device_is_named():
    assert "output is on meta but the inputs are on cpu" in compare(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize(
    "name, fn",
    [
        ("causal_mask", lambda n_queries, n_keys, device=None: ref.causal_mask(n_queries, n_keys)),
        ("attention_weights", lambda q, k, causal=True: ref.attention_weights(q.cpu(), k.cpu(), causal)),
        ("attention", lambda q, k, v, causal=True: ref.attention(q.cpu(), k.cpu(), v.cpu(), causal)),
    ],
    ids=["causal_mask ignores device", "attention_weights on cpu", "attention on cpu"],
)
def test_wrong_device_is_named(name, fn):
    expect_failure(name, fn, "but the inputs are on cuda", thorough=True)


# ----------------------------------------------------------------------------------------------
# Quiz Q3's key is the concept; the lesson's computation agrees with it
# ----------------------------------------------------------------------------------------------


def test_q3_key_is_the_concept_and_gpt2_agrees():
    """The hidden test of Q3 states the key ("B": old rows unchanged) instead of computing it from a float
    comparison; here the lesson's own computation (notebooks/01, section 1) is run on the local GPT-2: in every
    layer the old rows equal the earlier ones up to rounding (rtol=0, atol=1e-5) and the new columns are exactly 0."""
    import nbformat

    from attention_course.models import local_gpt2
    from course_copy import ROOT

    source = nbformat.read(ROOT / "source" / "01_causal_attention" / "causal_attention.ipynb", as_version=4)
    (cell,) = [c for c in source.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_q3"]
    assert 'check_choice("q3_appended_token", q3_appended_token, "ABCD", "B", {' in cell.source
    assert "local_gpt2" not in cell.source and "allclose" not in cell.source  # no float comparison decides the key

    gpt2 = local_gpt2(device="cpu")

    def maps(text):
        ids = gpt2.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return ids.shape[1], gpt2.model(ids, output_attentions=True).attentions

    n_old, before = maps("Hope is a waking dream")
    _, after = maps("Hope is a waking dream and")
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new[:, :, :n_old, :n_old], old, rtol=0, atol=1e-5)
        assert (new[:, :, :n_old, n_old:] == 0).all()
