"""The example class of 06_long_context."""

from attention_course.grading.examples import Replace, Student

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_rope_frequencies": "not implemented yet",
            "test_apply_rope": "not implemented yet",
            "test_window_mask": "not implemented yet",
            "test_module": "not implemented yet",
            "test_rolling_cache": "not implemented yet",
            "test_sink_cache": "not implemented yet",
            "test_q1": "not answered yet",
            "test_q2": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4": "not answered yet",
            "test_q5": "not answered yet",
        },
    ),
    Student(
        "interleaved_pairs",
        "apply_rope pairs features (2i, 2i + 1), as the RoPE paper writes it, instead of Llama's (i, i + d/2)",
        (
            Replace("apply_rope", "angles = torch.cat((angles, angles), dim=-1)  # [T, d]: pair i's angle at features i and i + d/2",
                    "angles = angles.repeat_interleave(2, dim=-1)  # [T, d]: pair i's angle at features 2i and 2i + 1"),
            Replace("apply_rope", "    first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]\n"
                                  "    rotated_half = torch.cat((-second, first), dim=-1)  # each pair turned by 90 degrees",
                    "    even, odd = x[..., 0::2], x[..., 1::2]\n"
                    "    rotated_half = torch.stack((-odd, even), dim=-1).flatten(-2)  # pairs (2i, 2i + 1) turned by 90 degrees"),
        ),
        # The layer turns its queries and keys with the student's apply_rope: the mistake shows in both.
        loses={"test_apply_rope": "paired as (0, 1), (2, 3)", "test_module": "paired as (0, 1), (2, 3)"},
    ),
    Student(
        "exponent_i_over_d",
        "the frequencies theta ** (-i / d): the head-dim split wrong",
        (Replace("rope_frequencies", "exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim  # 2i / d, i = 0 .. d/2 - 1",
                 "exponents = torch.arange(0, head_dim // 2, device=device, dtype=torch.float32) / head_dim  # i / d"),),
        loses={"test_rope_frequencies": "exponent i / d", "test_apply_rope": "exponent i / d", "test_module": "exponent i / d"},
    ),
    Student(
        "positions_restart",
        "every call of the layer puts its tokens at positions 0, 1, ... (the cache's length not read)",
        (Replace("module", "start = 0 if cache is None else len(cache)  # read before update: the new tokens follow the cached ones",
                 "start = 0  # the new tokens' positions"),),
        loses={"test_module": "positions restarted at 0 in each call"},
    ),
    Student(
        "keys_cached_unrotated",
        "keys cached before rotation, all of them turned again at their positions in every call (right outputs, wrong cache)",
        (Replace("module", "        q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)\n"
                           "        if cache is not None:\n"
                           "            k, v = cache.update(k, v)  # the turned keys are cached: [B, G, T_k, d]",
                 "        if cache is not None:\n"
                 "            k, v = cache.update(k, v)  # [B, G, T_k, d], not yet turned\n"
                 "        q = apply_rope(q, positions, self.rope_theta)\n"
                 "        k = apply_rope(k, torch.arange(k.shape[2], device=x.device), self.rope_theta)  # every key turned again"),),
        loses={"test_module": "keys were cached before rotation"},
    ),
    Student(
        "theta_ignored",
        "the layer rotates with the default theta, whatever rope_theta it was given (Llama-3: 500000)",
        (Replace("module", "q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)",
                 "q, k = apply_rope(q, positions), apply_rope(k, positions)"),),
        loses={"test_module": "theta was not used"},
    ),
    Student(
        "window_one_wider",
        "the window mask keeps window + 1 keys (j >= i - W)",
        (Replace("window_mask", "return allowed & (key_pos > query_pos - window)", "return allowed & (key_pos >= query_pos - window)"),),
        loses={"test_window_mask": "window + 1 keys", "test_module": "window + 1 keys"},
    ),
    Student(
        "read_after_write",
        "the rolling cache writes the new positions before reading the old ones",
        (Replace("rolling_cache",
                 "        k_all = torch.cat((self.keys[:, :, old], k_new), dim=2)  # [B, G, n_old + T_new, d]\n"
                 "        v_all = torch.cat((self.values[:, :, old], v_new), dim=2)\n"
                 "        kept = torch.arange(max(0, n_new - self.window), n_new, device=device)  # the new positions that stay: the last window\n"
                 "        slots = (seen + kept) % self.window\n"
                 "        self.keys[:, :, slots] = k_new[:, :, kept]\n"
                 "        self.values[:, :, slots] = v_new[:, :, kept]\n",
                 "        kept = torch.arange(max(0, n_new - self.window), n_new, device=device)\n"
                 "        slots = (seen + kept) % self.window\n"
                 "        self.keys[:, :, slots] = k_new[:, :, kept]\n"
                 "        self.values[:, :, slots] = v_new[:, :, kept]\n"
                 "        k_all = torch.cat((self.keys[:, :, old], k_new), dim=2)\n"
                 "        v_all = torch.cat((self.values[:, :, old], v_new), dim=2)\n"),),
        loses={"test_rolling_cache": "read after the new ones were written"},
    ),
    Student(
        "len_counts_held",
        "len of the rolling cache counts the slots in use, not the positions seen",
        (Replace("rolling_cache", "return self.length", "return min(self.length, self.window)"),),
        loses={"test_rolling_cache": "len(cache) counts the positions held"},
    ),
    Student(
        "sink_window_plus_one",
        "the sink cache returns window old positions after the sinks, one too many",
        (Replace("sink_cache", "recent = torch.arange(max(self.n_sink, seen - (self.window - 1)), max(self.n_sink, seen), device=device)",
                 "recent = torch.arange(max(self.n_sink, seen - self.window), max(self.n_sink, seen), device=device)"),),
        loses={"test_sink_cache": "one too many"},
    ),
    Student(
        "alternative_style",
        "correct, written differently: RoPE with complex numbers, the window mask from position differences",
        (
            Replace("apply_rope",
                    "    angles = torch.cat((angles, angles), dim=-1)  # [T, d]: pair i's angle at features i and i + d/2\n"
                    "    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)\n"
                    "    first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]\n"
                    "    rotated_half = torch.cat((-second, first), dim=-1)  # each pair turned by 90 degrees\n"
                    "    return x * cos + rotated_half * sin",
                    "    half = head_dim // 2\n"
                    "    pairs = torch.complex(x[..., :half].float(), x[..., half:].float())  # pair i as x_i + i x_{i+d/2}\n"
                    "    turned = pairs * torch.polar(torch.ones_like(angles), angles)  # times e^{i angle}\n"
                    "    return torch.cat((turned.real, turned.imag), dim=-1).to(x.dtype)"),
            Replace("window_mask",
                    "    allowed = causal_mask(n_queries, n_keys, device=device)  # [Tq, Tk]; raises when Tq > Tk\n"
                    "    query_pos = torch.arange(n_queries, device=device)[:, None] + (n_keys - n_queries)  # [Tq, 1]\n"
                    "    key_pos = torch.arange(n_keys, device=device)[None, :]  # [1, Tk]\n"
                    "    return allowed & (key_pos > query_pos - window)",
                    "    if n_queries > n_keys:\n"
                    "        raise ValueError(f\"{n_queries} queries but only {n_keys} keys\")\n"
                    "    behind = (torch.arange(n_queries, device=device)[:, None] + n_keys - n_queries\n"
                    "              - torch.arange(n_keys, device=device)[None, :])  # [Tq, Tk]: how far key j is behind query i\n"
                    "    return (behind >= 0) & (behind < window)"),
        ),
    ),
    Student(
        "quiz_misconceptions",
        "a full cache for Q1, slot = position for Q2, a rolling cache of all slots for Q3, the exponent i / d for Q4",
        (
            Replace("q1", "q1_rolling_cache_bytes = 2 * 32 * 8 * 128 * 4096 * 2", "q1_rolling_cache_bytes = 2 * 32 * 8 * 128 * 32768 * 2"),
            Replace("q2", "q2_slot_2_position = 18", "q2_slot_2_position = 2"),
            Replace("q3", 'q3_sink_positions = "C"', 'q3_sink_positions = "B"'),
            Replace("q4", "q4_rope_angle = 50", "q4_rope_angle = 500"),
        ),
        loses={
            "test_q1": "full cache of all 32768 positions",
            "test_q2": "only until the buffer wraps around",
            "test_q3": "rolling cache of 12 slots",
            "test_q4": "exponent i / d",
        },
    ),
]
