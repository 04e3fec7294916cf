"""The example class of 01_causal_attention."""

from attention_course.grading.examples import Replace, Student

SCALE = " / math.sqrt(q.shape[-1])"
NOT_SCALED = "were not scaled"

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_causal_mask": "not implemented yet",
            "test_attention_weights": "not implemented yet",
            "test_attention": "not implemented yet",
            "test_heads": "not implemented yet",
            "test_gpt2_attention": "not implemented yet",
            "test_q1a": "not answered yet",
            "test_q1b": "not answered yet",
            "test_q2": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4": "not answered yet",
            "test_q5": "not answered yet",
        },
    ),
    Student(
        "no_scale",
        "forgot the 1/sqrt(d) scale",
        (Replace("attention_weights", SCALE, ""),),
        loses={"test_attention_weights": NOT_SCALED, "test_attention": NOT_SCALED, "test_gpt2_attention": NOT_SCALED},
    ),
    Student(
        "softmax_axis",
        "softmax over the queries instead of the keys",
        (Replace("attention_weights", "torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)"),),
        loses={
            "test_attention_weights": "softmax over the wrong axis",
            "test_attention": "softmax over the wrong axis",
            "test_gpt2_attention": "softmax over the wrong axis",
        },
    ),
    Student(
        "top_left_mask",
        "causal mask aligned top-left: wrong only when there are fewer queries than keys",
        (Replace("causal_mask", "key_pos <= query_pos + offset", "key_pos <= query_pos"),),
        loses={
            "test_causal_mask": "aligned top-left",
            "test_attention_weights": "aligned top-left",
            "test_attention": "aligned top-left",
        },
    ),
    Student(
        "conv1d_transposed",
        "GPT-2's Conv1D weight used as if it were nn.Linear's",
        (Replace("gpt2_attention", "merge_heads(y) @ c_proj_weight", "merge_heads(y) @ c_proj_weight.T"),),
        loses={"test_gpt2_attention": "Conv1D weights used transposed"},
    ),
    Student(
        "heads_no_transpose",
        "heads split by a plain view, without the transpose",
        (
            Replace(
                "heads",
                "x = x.view(batch, length, n_heads, width // n_heads)  # [B, T, H, d]\n    return x.transpose(1, 2)",
                "return x.view(batch, n_heads, length, width // n_heads)",
            ),
        ),
        # Inside gpt2_attention the same view meets the non-contiguous slices of c_attn's output and fails.
        loses={"test_heads": "reshaped straight to [B, H, T, d]", "test_gpt2_attention": "view size is not compatible"},
    ),
    Student(
        "quiz_misconceptions",
        "all code right; the quiz answered with the study notebook's kind of slips",
        (
            Replace("q1", "1024 * 1025 // 2", "1024 * 1023 // 2"),
            Replace("q2", "(768 * 3 * 768 + 3 * 768) + (768 * 768 + 768)", "4 * 12 * 64 * 64"),
            Replace("q4", "6 + 7 + 8", "1 + 2 + 3"),
        ),
        loses={"test_q1b": "The diagonal counts too", "test_q2": "not H x d x d", "test_q4": "top-left mask"},
    ),
    Student(
        "alternative_style",
        "correct, written differently: einsum in float64, torch.tril, a loop over heads",
        (
            Replace(
                "causal_mask",
                "return key_pos <= query_pos + offset  # [Tq, Tk]",
                "return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=offset)",
            ),
            Replace(
                "attention_weights",
                "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., Tq, Tk]",
                "scores = torch.einsum('...qd,...kd->...qk', q.double(), k.double()) * q.shape[-1] ** -0.5",
            ),
            Replace("attention_weights", "return torch.softmax(scores, dim=-1)", "return torch.softmax(scores, dim=-1).to(q.dtype)"),
            Replace(
                "gpt2_attention",
                "y = attention(q, k, v, causal=True)  # [B, H, T, d]",
                "y = torch.stack([attention(q[:, h], k[:, h], v[:, h]) for h in range(n_heads)], dim=1)",
            ),
        ),
    ),
    Student(
        "scale_by_value_size",
        "attention scaled by sqrt of v's head size, as Hugging Face GPT-2's _attn (value.size(-1) ** 0.5)",
        (Replace("attention", "return attention_weights(q, k, causal) @ v",
                 "scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])  # value.size(-1) ** 0.5\n"
                 "    if causal:\n"
                 "        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float(\"-inf\"))\n"
                 "    return torch.softmax(scores, dim=-1) @ v"),),
        # gpt2_attention has dv == dk: there the same code is right, and it keeps its points.
        loses={"test_attention": "scaled by the size of v's heads"},
    ),
    Student(
        "fill_minus_1e9",
        "masked scores filled with -1e9 (the Annotated Transformer's habit), which overflows float16",
        (Replace("attention_weights", 'scores.masked_fill(~allowed, float("-inf"))', "scores.masked_fill(~allowed, -1e9)"),),
        loses={"test_attention_weights": "does not fit in float16", "test_attention": "does not fit in float16",
               "test_gpt2_attention": "does not fit in float16"},
    ),
    Student(
        "additive_mask",
        "correct, written differently: an additive mask of finfo.min with torch.where, the softmax in float32 cast back",
        (
            Replace("attention_weights", 'scores = scores.masked_fill(~allowed, float("-inf"))',
                    "scores = scores + torch.where(allowed, 0.0, torch.finfo(scores.dtype).min)"),
            Replace("attention_weights", "return torch.softmax(scores, dim=-1)", "return torch.softmax(scores.float(), dim=-1).to(q.dtype)"),
        ),
    ),
]
