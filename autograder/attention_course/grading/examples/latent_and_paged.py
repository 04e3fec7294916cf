"""The example class of 07_latent_and_paged."""

from attention_course.grading.examples import Replace, Student

STUDENTS = [
    Student("solution", "the instructor's solution as is"),
    Student(
        "untouched",
        "the release, not worked on",
        blank=True,
        loses={
            "test_cache_bytes": "not implemented yet",
            "test_module": "not implemented yet",
            "test_absorbed": "not implemented yet",
            "test_paged_cache": "not implemented yet",
            "test_paged_attention": "not implemented yet",
            "test_q1": "not answered yet",
            "test_q2": "not answered yet",
            "test_q3": "not answered yet",
            "test_q4": "not answered yet",
        },
    ),
    Student(
        "latent_twice",
        "mla_cache_bytes counts the latent once for keys and once for values",
        (Replace("cache_bytes", "return batch_size *", "return 2 * batch_size *"),),
        loses={"test_cache_bytes": "the latent counted twice"},
    ),
    Student(
        "rope_on_latent",
        "rotary embeddings applied to the compressed part: the latent is rotated before it is cached",
        (Replace("module", "latent, k_rot = self.kv_a_layernorm(latent), rotate(k_rot, start, self.rope_theta)",
                 "latent, k_rot = rotate(self.kv_a_layernorm(latent), start, self.rope_theta), rotate(k_rot, start, self.rope_theta)"),),
        loses={"test_module": "rotary embeddings applied to the compressed part",
               "test_absorbed": "rotary embeddings applied to the compressed part"},
    ),
    Student(
        "cache_up_projected",
        "the keys and values after up-projection cached (a cache that sizes itself on the first update), not the latent",
        (
            Replace("module", "        self.latent = torch.zeros(batch_size, max_len, kv_lora_rank, dtype=dtype, device=device)\n",
                    "        self.batch_size, self.max_len, self.dtype, self.device = batch_size, max_len, dtype, device\n"
                    "        self.latent = None  # sized on the first update\n"),
            Replace("module", "        end = self.length + latent_new.shape[1]\n",
                    "        end = self.length + latent_new.shape[1]\n"
                    "        if self.latent is None:\n"
                    "            self.latent = torch.zeros(self.batch_size, self.max_len, latent_new.shape[-1], dtype=self.dtype, device=self.device)\n"),
            Replace("module", "        if cache is not None:\n            latent, k_rot = cache.update(latent, k_rot)  # [B, T, r], [B, T, dr]\n",
                    "        up = self.kv_b_proj(latent)  # [B, T_new, H*(dn+dv)]: keys and values of every head\n"
                    "        if cache is not None:\n"
                    "            up, k_rot = cache.update(up, k_rot)\n"
                    "        latent = up\n"),
            Replace("module", "            kv = self.kv_b_proj(latent).view(batch, n_keys, self.n_heads, -1).transpose(1, 2)  # [B, H, T, dn+dv]",
                    "            kv = up.view(batch, n_keys, self.n_heads, -1).transpose(1, 2)  # [B, H, T, dn+dv]"),
        ),
        # The absorbed path then reads the cached keys as if they were latents: its shapes no longer fit.
        loses={"test_module": "the keys and values after up-projection were cached", "test_absorbed": "raised RuntimeError"},
    ),
    Student(
        "absorb_swapped",
        "absorption in the wrong order: W_UV taken for W_UK (kv_b_proj's value rows before its key rows)",
        (Replace("module", "w_uk, w_uv = weight.split([self.nope, self.v_dim], dim=1)  # [H, dn, r], [H, dv, r]",
                 "w_uv, w_uk = weight.split([self.v_dim, self.nope], dim=1)"),),
        loses={"test_absorbed": "taken in the wrong order"},
    ),
    Student(
        "absorb_heads_inner",
        "absorption in the wrong order: kv_b_proj's weight split as [dn + dv, H, r]",
        (Replace("module", "weight = self.kv_b_proj.weight.view(self.n_heads, self.nope + self.v_dim, self.rank)  # [H, dn+dv, r]",
                 "weight = self.kv_b_proj.weight.view(self.nope + self.v_dim, self.n_heads, self.rank).transpose(0, 1)"),),
        loses={"test_absorbed": "split as [dn + dv, H, r]"},
    ),
    Student(
        "absorb_broadcast",
        "absorbed, but the latent broadcast over the heads by torch.matmul (an H-fold copy in every decode step)",
        (Replace("module",
                 "            q_latent = (q_nope @ w_uk).reshape(batch, self.n_heads * length, self.rank)  # [B, H*T_new, r]\n"
                 "            scores = (q_latent @ latent.transpose(-2, -1)).view(batch, self.n_heads, length, n_keys) + rotary_scores",
                 "            q_latent = q_nope @ w_uk  # [B, H, T_new, r]\n"
                 "            scores = q_latent @ latent[:, None].transpose(-2, -1) + rotary_scores"),),
        loses={"test_absorbed": "made a tensor of the size of per-head keys"},
    ),
    Student(
        "block_too_many",
        "the paged cache takes length // block_size + 1 blocks: one too many at a block's end",
        (Replace("paged_cache", "needed = (end + self.block_size - 1) // self.block_size - len(table)",
                 "needed = end // self.block_size + 1 - len(table)"),),
        loses={"test_paged_cache": "one block too many"},
    ),
    Student(
        "never_freed",
        "free forgets the sequence but keeps its blocks",
        (Replace("paged_cache", "self.free_list += self.block_tables.pop(seq_id)", "self.block_tables.pop(seq_id)"),),
        loses={"test_paged_cache": "free did not give the sequence's blocks back"},
    ),
    Student(
        "pool_order",
        "paged_attention reads the sequence's blocks in pool order, not in block-table order",
        (Replace("paged_attention", "table = torch.tensor(cache.block_tables[seq_id], dtype=torch.long, device=q.device)",
                 "table = torch.tensor(sorted(cache.block_tables[seq_id]), dtype=torch.long, device=q.device)"),),
        loses={"test_paged_attention": "read in the pool's order"},
    ),
    Student(
        "padding_attended",
        "paged_attention attends the unused slots of the last block",
        (
            Replace("paged_attention", "length = cache.lengths[seq_id]", "length = len(cache.block_tables[seq_id]) * cache.block_size"),
        ),
        loses={"test_paged_attention": "the unused slots of the last block were attended"},
    ),
    Student(
        "alternative_style",
        "a different correct solution: einsum for the heads, a vectorized append, repeat_interleave in paged attention",
        (
            Replace("module", "            scores = q_nope @ k_nope.transpose(-2, -1) + rotary_scores  # [B, H, T_new, T]",
                    "            scores = torch.einsum('bhqd,bhkd->bhqk', q_nope, k_nope) + rotary_scores"),
            Replace("paged_cache",
                    "        for offset in range(k_new.shape[0]):\n"
                    "            block, slot = table[(start + offset) // self.block_size], (start + offset) % self.block_size\n"
                    "            self.keys[block, slot] = k_new[offset]\n"
                    "            self.values[block, slot] = v_new[offset]\n",
                    "        positions = torch.arange(start, end, device=self.keys.device)\n"
                    "        blocks = torch.tensor(table, dtype=torch.long, device=self.keys.device)[positions // self.block_size]\n"
                    "        self.keys[blocks, positions % self.block_size] = k_new\n"
                    "        self.values[blocks, positions % self.block_size] = v_new\n"),
            Replace("paged_attention",
                    "    rows = q.reshape(n_kv_heads, (n_heads // n_kv_heads) * n_queries, head_dim)  # [G, (H/G)*Tq, d]\n"
                    "    scores = (rows @ keys.transpose(-2, -1) / math.sqrt(head_dim)).view(n_heads, n_queries, length)  # [H, Tq, T]\n",
                    "    keys = keys.repeat_interleave(n_heads // n_kv_heads, dim=0)  # [H, T, d]\n"
                    "    scores = torch.einsum('hqd,hkd->hqk', q, keys) / math.sqrt(head_dim)\n"),
            Replace("paged_attention",
                    "    y = weights.view(n_kv_heads, -1, length) @ values  # [G, (H/G)*Tq, d]\n"
                    "    return y.view(n_heads, n_queries, head_dim)",
                    "    return weights @ values.repeat_interleave(n_heads // n_kv_heads, dim=0)"),
        ),
    ),
    Student(
        "quiz_misconceptions",
        "the latent counted for keys and values, blocks shared between sequences, the whole reservation called waste",
        (
            Replace("q1", "q1_deepseek_v3_cache_bytes = 61 * (512 + 64) * 32768 * 2", "q1_deepseek_v3_cache_bytes = 2 * 61 * (512 + 64) * 32768 * 2"),
            Replace("q3", "q3_blocks = 7 + 2 + 4 + 1", "q3_blocks = (100 + 17 + 64 + 1 + 15) // 16"),
            Replace("q4", "q4_wasted_bytes = (4 * 2048 - (100 + 17 + 64 + 1)) * 2 * 32 * 8 * 128 * 2",
                    "q4_wasted_bytes = 4 * 2048 * 2 * 32 * 8 * 128 * 2"),
        ),
        loses={"test_q1": "counts the latent twice", "test_q3": "shares blocks between sequences",
               "test_q4": "That is all it reserves"},
    ),
]
