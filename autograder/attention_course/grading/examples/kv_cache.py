"""The example class of 02_kv_cache."""

from attention_course.grading.examples import Replace, Student

RETURN_VIEWS = "return self.keys[:, :, :end], self.values[:, :, :end]"
ATTEND = "y = attention(q, k_all, v_all, causal=True)"

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_kv_cache": "not implemented yet",
            "test_cached_attention": "not implemented yet",
            "test_generate": "not implemented yet",
            "test_bytes": "not implemented yet",
            "test_q1a": "not answered yet",
            "test_q1b": "not answered yet",
            "test_q2": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4a": "not answered yet",
            "test_q4b": "not answered yet",
        },
    ),
    Student(
        "cache_not_appended",
        "update returns the new keys and values only, not the cache",
        (Replace("kv_cache", RETURN_VIEWS, "return k_new, v_new"),),
        loses={"test_kv_cache": "cache not appended"},
    ),
    Student(
        "whole_buffer",
        "update returns the whole preallocated buffer, empty slots included",
        (Replace("kv_cache", RETURN_VIEWS, "return self.keys, self.values"),),
        loses={"test_kv_cache": "whole buffer returned including empty slots"},
    ),
    Student(
        "concatenating_cache",
        "a cache that grows by torch.cat: right values, but the whole cache copied at every step",
        (
            Replace(
                "kv_cache",
                "self.keys[:, :, self.length : end] = k_new\n        self.values[:, :, self.length : end] = v_new",
                "self.keys = torch.cat([self.keys[:, :, : self.length], k_new, self.keys[:, :, end:]], dim=2)\n"
                "        self.values = torch.cat([self.values[:, :, : self.length], v_new, self.values[:, :, end:]], dim=2)",
            ),
        ),
        loses={"test_kv_cache": "update copies the whole cache"},
    ),
    Student(
        "top_left_prefill",
        "F.scaled_dot_product_attention(is_causal=True): top-left mask when queries < keys",
        (Replace("cached_attention", ATTEND, "y = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)"),),
        loses={"test_cached_attention": "top-left mask during chunked prefill"},
    ),
    Student(
        "new_tokens_only",
        "appends to the cache but attends over the new tokens' keys only",
        (Replace("cached_attention", ATTEND, "y = attention(q, k, v, causal=True)"),),
        loses={"test_cached_attention": "the new tokens only attended to"},
    ),
    Student(
        "decode_off_by_one",
        "the decode loop runs one step too few",
        (Replace("generate", "for _ in range(max_new_tokens):", "for _ in range(max_new_tokens - 1):"),),
        loses={"test_generate": "decode loop off by one"},
    ),
    Student(
        "cache_unused",
        "use_cache=True but feeds the whole sequence every step (into a cache too small for it)",
        (Replace("generate", "unseen = next_id", "unseen = ids"),),
        loses={"test_generate": "each decode step must feed only the newest token"},
    ),
    Student(
        "seed_formula",
        "the study notebook's cache-size formula, everywhere",
        (
            Replace(
                "bytes",
                "return 2 * batch_size * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_element",
                "return batch_size * n_layers * n_kv_heads * seq_len * 2 * 2",
            ),
            Replace("q1", "kv_cache_bytes(1, 12, 12, 64, 1024, 4)", "1 * 12 * 12 * 1024 * 2 * 2"),
            Replace("q2", "kv_cache_bytes(1, 32, 32, 128, 4096, 2)", "1 * 32 * 32 * 4096 * 2 * 2"),
            Replace("q4", "100 * 101 // 2", "100 * 100"),
        ),
        # q1b uses the learner's (wrong) kv_cache_bytes: the same formula.
        loses={
            "test_bytes": "leaves out head_dim",
            "test_q1a": "leaves out head_dim",
            "test_q1b": "leaves out head_dim",
            "test_q2": "leaves out head_dim",
            "test_q4b": "The causal mask keeps only",
        },
    ),
    Student(
        "alternative_style",
        "correct, written differently: one [2, B, G, T, d] buffer, einsum attention with an explicit mask, a while loop",
        (
            Replace(
                "kv_cache",
                "self.keys = torch.zeros(shape, dtype=dtype, device=device)\n"
                "        self.values = torch.zeros(shape, dtype=dtype, device=device)",
                "self.buffer = torch.empty((2, *shape), dtype=dtype, device=device)\n"
                "        self.keys, self.values = self.buffer[0], self.buffer[1]",
            ),
            Replace(
                "cached_attention",
                ATTEND,
                "n_new, n_all = q.shape[2], k_all.shape[2]\n"
                "    scores = torch.einsum('bhqd,bhkd->bhqk', q, k_all) * q.shape[-1] ** -0.5\n"
                "    allowed = torch.ones(n_new, n_all, dtype=torch.bool, device=q.device).tril(n_all - n_new)\n"
                "    weights = scores.masked_fill(~allowed, float('-inf')).softmax(dim=-1)\n"
                "    y = torch.einsum('bhqk,bhkd->bhqd', weights, v_all)",
            ),
            Replace(
                "generate",
                "for _ in range(max_new_tokens):",
                "while ids.shape[1] < input_ids.shape[1] + max_new_tokens:",
            ),
        ),
    ),
    Student(
        "narrow_views",
        "correct, written differently: the cached part returned by narrow(), the positions counted in a list",
        (
            Replace("kv_cache", "return self.keys[:, :, :end], self.values[:, :, :end]",
                    "return self.keys.narrow(2, 0, end), self.values.narrow(2, 0, end)"),
            Replace("kv_cache", "self.length = 0", "self.length = 0\n        self.steps = []"),
            Replace("kv_cache", "self.length = end\n", "self.steps.append(k_new.shape[2])\n        self.length = sum(self.steps)\n"),
        ),
    ),
]
