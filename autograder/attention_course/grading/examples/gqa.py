"""The example class of 04_gqa."""

from attention_course.grading.examples import Replace, Student

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_repeat_kv": "not implemented yet",
            "test_gqa_attention": "not implemented yet",
            "test_module": "not implemented yet",
            "test_convert": "not implemented yet",
            "test_q1": "not answered yet",
            "test_q2": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4a": "not answered yet",
            "test_q4b": "not answered yet",
            "test_q5": "not answered yet",
        },
    ),
    Student(
        "repeat_not_interleave",
        "repeat_kv with repeat instead of repeat_interleave",
        (Replace("repeat_kv", "return x.repeat_interleave(n_rep, dim=1)", "return x.repeat(1, n_rep, 1, 1)"),),
        loses={"test_repeat_kv": "repeat instead of repeat_interleave"},
    ),
    Student(
        "modulo_groups",
        "query head h paired with key/value group h % G (heads folded as [B, H/G, G, ...])",
        (
            Replace("gqa_attention", "rows = q.reshape(batch, n_kv_heads, per_group * n_queries, head_dim)  # [B, G, (H/G)*Tq, d]: a group's queries as rows",
                    "rows = q.reshape(batch, per_group, n_kv_heads, n_queries, head_dim).transpose(1, 2)"
                    ".reshape(batch, n_kv_heads, per_group * n_queries, head_dim)  # heads h, h + G, ... as one group"),
            Replace("gqa_attention", "scores = scores.view(batch, n_heads, n_queries, n_keys)  # [B, H, Tq, Tk]",
                    "scores = scores.view(batch, n_kv_heads, per_group, n_queries, n_keys)  # [B, G, H/G, Tq, Tk]"),
            Replace("gqa_attention", "y = weights.view(batch, n_kv_heads, per_group * n_queries, n_keys) @ v  # [B, G, (H/G)*Tq, d]",
                    "y = weights.view(batch, n_kv_heads, per_group * n_queries, n_keys) @ v  # [B, G, (H/G)*Tq, d]\n"
                    "    y = y.view(batch, n_kv_heads, per_group, n_queries, head_dim).transpose(1, 2)  # [B, H/G, G, Tq, d]"),
            Replace("gqa_attention", "return y.view(batch, n_heads, n_queries, head_dim)",
                    "return y.reshape(batch, n_heads, n_queries, head_dim)"),
        ),
        # The layer attends with the student's gqa_attention: the mistake shows in both.
        loses={"test_gqa_attention": "paired with key/value group h % G", "test_module": "paired with key/value group h % G"},
    ),
    Student(
        "kv_full_width",
        "key and value projections D wide, as in multi-head attention",
        (
            Replace("module", "self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)",
                    "self.k_proj = nn.Linear(d_model, d_model, bias=bias)"),
            Replace("module", "self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)",
                    "self.v_proj = nn.Linear(d_model, d_model, bias=bias)"),
        ),
        # mha_to_gqa builds the student's layer, whose projections then do not fit the pooled weights.
        loses={"test_module": "k_proj and v_proj map D -> D", "test_convert": "raised RuntimeError"},
    ),
    Student(
        "strided_pooling",
        "mha_to_gqa pools heads g, g + G, g + 2G, ... instead of each group's consecutive heads",
        (
            Replace("convert", "weight = source.weight.view(n_kv_heads, per_group, head_dim, d_model)  # [G, H/G, d, D]",
                    "weight = source.weight.view(per_group, n_kv_heads, head_dim, d_model).transpose(0, 1)"),
            Replace("convert", "target.bias.copy_(source.bias.view(n_kv_heads, per_group, head_dim).mean(dim=1).flatten())",
                    "target.bias.copy_(source.bias.view(per_group, n_kv_heads, head_dim).mean(dim=0).flatten())"),
        ),
        loses={"test_convert": "pooled the wrong heads together"},
    ),
    Student(
        "alternative_style",
        "a different correct solution: repeat_kv copies and einsum, pooling with a loop over groups",
        (
            Replace(
                "gqa_attention",
                "    per_group = n_heads // n_kv_heads\n"
                "    rows = q.reshape(batch, n_kv_heads, per_group * n_queries, head_dim)  # [B, G, (H/G)*Tq, d]: a group's queries as rows\n"
                "    scores = rows @ k.transpose(-2, -1) / math.sqrt(head_dim)  # [B, G, (H/G)*Tq, Tk]\n"
                "    scores = scores.view(batch, n_heads, n_queries, n_keys)  # [B, H, Tq, Tk]\n",
                "    k, v = repeat_kv(k, n_heads // n_kv_heads), repeat_kv(v, n_heads // n_kv_heads)\n"
                "    scores = torch.einsum('bhqd,bhkd->bhqk', q, k) * head_dim**-0.5\n",
            ),
            Replace(
                "gqa_attention",
                "    y = weights.view(batch, n_kv_heads, per_group * n_queries, n_keys) @ v  # [B, G, (H/G)*Tq, d]\n"
                "    return y.view(batch, n_heads, n_queries, head_dim)  # [B, H, Tq, d]",
                "    return torch.einsum('bhqk,bhkd->bhqd', weights, v)",
            ),
            Replace(
                "convert",
                "            weight = source.weight.view(n_kv_heads, per_group, head_dim, d_model)  # [G, H/G, d, D]\n"
                "            target.weight.copy_(weight.mean(dim=1).reshape(n_kv_heads * head_dim, d_model))  # [G*d, D]\n"
                "            if bias:\n"
                "                target.bias.copy_(source.bias.view(n_kv_heads, per_group, head_dim).mean(dim=1).flatten())  # [G*d]",
                "            rows = per_group * head_dim  # the rows of one group's heads\n"
                "            for g in range(n_kv_heads):\n"
                "                block = source.weight[g * rows:(g + 1) * rows].reshape(per_group, head_dim, d_model)\n"
                "                target.weight[g * head_dim:(g + 1) * head_dim] = block.sum(0) / per_group\n"
                "                if bias:\n"
                "                    target.bias[g * head_dim:(g + 1) * head_dim] = source.bias[g * rows:(g + 1) * rows].reshape(per_group, head_dim).sum(0) / per_group",
            ),
        ),
    ),
    Student(
        "quiz_misconceptions",
        "the study notebook's answers: 2 * D * D / G, an output projection that shrinks, the seed's cache formula",
        (
            Replace("q1", 'q1_how_gqa_works = "B"', 'q1_how_gqa_works = "C"'),
            Replace("q2", "q2_llama3_kv_params = 2 * 4096 * 8 * 128", "q2_llama3_kv_params = 2 * 4096 * 4096 // 8"),
            Replace("q3", "q3_o_proj_params = 4096 * 4096", "q3_o_proj_params = 8 * 128 * 4096"),
            Replace("q5", "q5_llama3_cache_bytes = 2 * 32 * 8 * 128 * 8192 * 2", "q5_llama3_cache_bytes = 32 * 32 * 8192 * 2 * 2"),
        ),
        loses={
            "test_q1": "The output projection is one D x D matrix",
            "test_q2": "study notebook's 2 * D * D / G",
            "test_q3": "in MHA, MQA and GQA alike",
            "test_q5": "study notebook's formula",
        },
    ),
    Student(
        "mask_buffer",
        "a causal mask kept as a persistent buffer (as nanoGPT keeps `bias`): Llama's weights no longer load strictly",
        (Replace("module", "self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)",
                 "self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)\n"
                 "        self.register_buffer(\"causal\", torch.ones(64, 64, dtype=torch.bool).tril())  # kept for masking"),),
        loses={"test_module": "`causal` is a persistent buffer",
               "test_convert": "the returned layer has parameters",},
    ),
    Student(
        "expand_reshape",
        "correct, written differently: repeat_kv as a broadcast view expanded and reshaped",
        (Replace("repeat_kv", "return x.repeat_interleave(n_rep, dim=1)",
                 "batch, n_kv_heads, length, head_dim = x.shape\n"
                 "    return x[:, :, None].expand(batch, n_kv_heads, n_rep, length, head_dim).reshape(batch, n_kv_heads * n_rep, length, head_dim)"),),
    ),
]
