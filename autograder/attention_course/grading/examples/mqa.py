"""The example class of 03_mqa."""

from attention_course.grading.examples import Replace, Student

ROWS_PRODUCT = "scores = rows @ k.transpose(-2, -1) / math.sqrt(head_dim)  # [B, 1, H*Tq, Tk]"

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_mqa_attention": "not implemented yet",
            "test_mqa_no_copy": "not implemented yet",
            "test_module": "not implemented yet",
            "test_params": "not implemented yet",
            "test_q1": "not answered yet",
            "test_q2a": "not answered yet",
            "test_q2b": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4a": "not answered yet",
            "test_q4b": "not answered yet",
        },
    ),
    Student(
        "broadcast_matmul",
        "q @ k^T with k broadcast over the heads: right values, but torch.matmul copies k once per head",
        (
            Replace(
                "mqa_attention",
                "rows = q.reshape(batch, 1, n_heads * n_queries, head_dim)  # [B, 1, H*Tq, d]: every head's queries as rows\n"
                "    " + ROWS_PRODUCT + "\n"
                "    scores = scores.view(batch, n_heads, n_queries, n_keys)  # [B, H, Tq, Tk]",
                "scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)  # [B, H, Tq, Tk], k broadcast over heads",
            ),
            Replace(
                "mqa_attention",
                "y = weights.view(batch, 1, n_heads * n_queries, n_keys) @ v  # [B, 1, H*Tq, d]\n"
                "    return y.view(batch, n_heads, n_queries, head_dim)  # [B, H, Tq, d]",
                "return weights @ v  # [B, H, Tq, d]",
            ),
        ),
        loses={"test_mqa_no_copy": "k or v copied once per query head"},
    ),
    Student(
        "repeat_interleave_copy",
        "copies k and v to every head with repeat_interleave, then multi-head attention: right values, H-fold memory",
        (
            Replace(
                "mqa_attention",
                "n_keys = k.shape[-2]\n",
                "n_keys = k.shape[-2]\n    k, v = k.repeat_interleave(n_heads, dim=1), v.repeat_interleave(n_heads, dim=1)  # [B, H, Tk, d]\n",
            ),
            Replace("mqa_attention", "rows = q.reshape(batch, 1, n_heads * n_queries, head_dim)", "rows = q"),
            Replace("mqa_attention", "y = weights.view(batch, 1, n_heads * n_queries, n_keys) @ v", "y = weights @ v"),
        ),
        loses={"test_mqa_no_copy": "k or v copied once per query head"},
    ),
    Student(
        "no_scale",
        "forgot the 1/sqrt(d) scale",
        (Replace("mqa_attention", ROWS_PRODUCT, "scores = rows @ k.transpose(-2, -1)"),),
        # The layer attends with the student's mqa_attention: the mistake shows in both.
        loses={"test_mqa_attention": "the scores were not scaled", "test_module": "the scores were not scaled"},
    ),
    Student(
        "kv_full_width",
        "key and value projections D wide, as in multi-head attention",
        (
            Replace("module", "self.k_proj = nn.Linear(d_model, self.head_dim, bias=bias)", "self.k_proj = nn.Linear(d_model, d_model, bias=bias)"),
            Replace("module", "self.v_proj = nn.Linear(d_model, self.head_dim, bias=bias)", "self.v_proj = nn.Linear(d_model, d_model, bias=bias)"),
        ),
        loses={"test_module": "k_proj and v_proj map D -> D"},
    ),
    Student(
        "shared_queries",
        "shares the queries instead of the keys and values",
        (
            Replace("module", "self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)",
                    "self.q_proj = nn.Linear(d_model, self.head_dim, bias=bias)"),
            Replace("module", "self.k_proj = nn.Linear(d_model, self.head_dim, bias=bias)",
                    "self.k_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)"),
            Replace("module", "self.v_proj = nn.Linear(d_model, self.head_dim, bias=bias)",
                    "self.v_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)"),
        ),
        loses={"test_module": "the queries are shared instead of the keys and values"},
    ),
    Student(
        "seed_params",
        "the study notebook's parameter count: d x d per head",
        (Replace("params", "return 2 * (d_model * kv_width + (kv_width if bias else 0))",
                 "return 2 * (kv_width * (d_model // n_heads) + (kv_width if bias else 0))"),),
        # The solution's quiz answers call kv_projection_params: the mistake carries into them.
        loses={"test_params": "study notebook's 2 * d * d * H", "test_q2a": "2 * d * d * H", "test_q2b": "2 * d * d"},
    ),
    Student(
        "quiz_misconceptions",
        "the study notebook's answers: d x d projections, the seed's cache formula",
        (
            Replace("q1", 'q1_what_is_shared = "B"', 'q1_what_is_shared = "A"'),
            Replace("q2", "q2a_mha_kv_params = kv_projection_params(2048, 16, 16)", "q2a_mha_kv_params = 2 * 128 * 128 * 16"),
            Replace("q2", "q2b_mqa_kv_params = kv_projection_params(2048, 16, 1)", "q2b_mqa_kv_params = 2 * 128 * 128"),
            Replace("q4", "q4a_falcon_cache_bytes = 2 * 32 * 1 * 64 * 2048 * 2", "q4a_falcon_cache_bytes = 1 * 32 * 1 * 2048 * 2 * 2"),
        ),
        loses={
            "test_q1": "every head keeps its own queries",
            "test_q2a": "study notebook's 2 * d * d * H",
            "test_q2b": "study notebook's 2 * d * d",
            "test_q4a": "leaves out head_dim",
            "test_q4b": "leaves out head_dim",
        },
    ),
    Student(
        "mask_buffer",
        "a causal mask kept as a persistent buffer (as nanoGPT keeps `bias`): Llama's weights no longer load strictly",
        (Replace("module", "self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)",
                 "self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)\n"
                 "        self.register_buffer(\"causal\", torch.ones(64, 64, dtype=torch.bool).tril())  # kept for masking"),),
        loses={"test_module": "`causal` is a persistent buffer",},
    ),
    Student(
        "square_mask",
        "a Tq x Tq mask against Tk keys (LLMs-from-scratch's mask[:num_tokens, :num_tokens], kept when a cache is added)",
        (Replace("mqa_attention", "~causal_mask(n_queries, n_keys, device=q.device)", "~causal_mask(n_queries, n_queries, device=q.device)"),),
        # The layer attends with the student's mqa_attention: its cached chunk meets the same mask.
        loses={"test_mqa_attention": "is Tq x Tk, bottom-right aligned", "test_mqa_no_copy": "raised RuntimeError",
               "test_module": "is Tq x Tk, bottom-right aligned"},
    ),
]
