"""07_latent_and_paged, reference half: what each exercise's outputs should be, the known mistakes they are
compared with when they are not, and what a comparison cannot judge (the kernel half: ``kernel/latent_and_paged.py``).
Thorough layer cases are compared with Hugging Face's ``DeepseekV3Attention`` loaded with the case's weights."""

import math

import torch

from attention_course.exercises import Exercise
from attention_course.exercises.causal_attention import TOP_LEFT
from attention_course.exercises.gqa import MODULO, NOT_UPDATED, grouped_variant
from attention_course.exercises.kernel import latent_and_paged as kernel
from attention_course.exercises.kernel.draw import RAISES, shape
from attention_course.kernels import latent_and_paged as ref

# mla_cache_bytes
LATENT_TWICE = ("the latent counted twice, once for keys and once for values: MLA caches one latent per token and layer, "
                "from which kv_b_proj rebuilds both (r + dr numbers, not 2 (r + dr))")
ROPE_KEY_MISSED = "the rotary key was left out: each token also caches its qk_rope_head_dim-wide rotary key, shared by the heads"
NO_BYTES = "this counts elements, not bytes: multiply by bytes_per_element"
# The layer
ROPE_ON_LATENT = ("rotary embeddings applied to the compressed part (the latent): a rotation that depends on the position "
                  "does not commute with kv_b_proj, so the up-projection could no longer be absorbed into the query. Only "
                  "the decoupled qk_rope_head_dim parts of queries and keys are rotated; the latent is cached as it is")
NOT_NORMED = "the latent was cached (and up-projected) without kv_a_layernorm: normalize it first, then cache it"
INTERLEAVED = ("rotary pairs adjacent dimensions (0, 1), (2, 3), ...: the contract, like Llama and Hugging Face with "
               "rope_interleave=False, pairs dimension i with i + dr/2 (rotate_half)")
NOT_ROTATED = "the rotary key was cached without its rotation: rotate k_rot at its position before caching it"
SCALE_NOPE = "the scores were divided by sqrt(qk_nope_head_dim); a head's query and key are dn + dr wide: 1 / sqrt(dn + dr)"
UP_PROJECTED = ("the keys and values after up-projection were cached (H heads of dn + dr and dv numbers per token), not "
                "the latent: the point of MLA is to cache the r-wide latent and the dr-wide rotary key, and rebuild the rest")
ODD_ROPE = "an odd qk_rope_head_dim, which rotary embeddings cannot split into pairs"
# Absorbed
SCALE_LATENT = ("the scores were divided by sqrt(kv_lora_rank), the latent's width: absorbing W_UK into the query changes "
                "where the product is taken, not what it is; the scale stays 1 / sqrt(dn + dr)")
SWAPPED = ("the key and value parts of kv_b_proj were taken in the wrong order: per head its rows are first the "
           "qk_nope_head_dim key rows (W_UK), then the v_head_dim value rows (W_UV)")
HEADS_INNER = ("kv_b_proj's weight was split as [dn + dv, H, r]: its rows are grouped by head first, "
               "weight.view(H, dn + dv, r), then split into W_UK [H, dn, r] and W_UV [H, dv, r]")
ROPE_DROPPED = "the rotary part of the score (q_rot . k_rot) was left out: the score is q_latent . latent + q_rot . k_rot"
PER_HEAD_COPY = ("an absorbed decode step made a tensor of the size of per-head keys or values over the cached positions "
                 "(the up-projection, or a latent or rotary key broadcast over the heads by torch.matmul, which copies it "
                 "H times): fold the heads into the rows of one product against the shared latent, "
                 "q_latent.reshape(B, H * Tq, r) @ latent.transpose(-2, -1)")
# Paged cache
PER_TOKEN = "a block was taken for every token: a block holds block_size tokens; take a new one only when the last is full"
OVER_ALLOCATED = ("one block too many when a sequence's length is a multiple of block_size: it needs ceil(length / block_size) "
                  "blocks, (length + block_size - 1) // block_size, not length // block_size + 1")
NOT_FREED = "free did not give the sequence's blocks back to the pool"
# Paged attention
POOL_ORDER = ("the sequence's blocks were read in the pool's order, not in its block table's: position p is in block "
              "block_tables[seq_id][p // block_size], wherever that block is in the pool")
PADDING_ATTENDED = "the unused slots of the last block were attended: keep the first lengths[seq_id] positions only"


# ----------------------------------------------------------------------------------------------
# mla_cache_bytes
# ----------------------------------------------------------------------------------------------


def _bytes_expected(case) -> dict:
    if "real" in case:
        from attention_course.model_configs import LATENT, meta_deepseek_attention, mla_cache_bytes_of

        config = LATENT[case["real"]]()
        layer = meta_deepseek_attention(config)
        batch, _, _, _, seq_len, nbytes = case["args"]
        real = (batch, config.num_hidden_layers, layer.kv_lora_rank, layer.qk_rope_head_dim, seq_len, nbytes)
        assert real == case["args"], f"{case['real']}: the kernel half's REAL_CACHES is out of date"
        return {"bytes": mla_cache_bytes_of(config, batch, seq_len, nbytes)}
    return {"bytes": ref.mla_cache_bytes(*case["args"])}


def _bytes_mistakes(case) -> dict:
    batch, layers, rank, rope, seq_len, nbytes = case["args"]
    right = ref.mla_cache_bytes(*case["args"])
    return {"bytes": {LATENT_TWICE: 2 * right, ROPE_KEY_MISSED: batch * layers * rank * seq_len * nbytes,
                      NO_BYTES: right // nbytes}}


def _describe_bytes(case) -> str:
    if "real" in case:
        return f"mla_cache_bytes{case['args']} vs {case['real']}'s real layers (on the meta device)"
    return f"mla_cache_bytes{case['args']}"


# ----------------------------------------------------------------------------------------------
# The layer, plain and absorbed, as a learner might write it (float64)
# ----------------------------------------------------------------------------------------------


def _rms(t, weight):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


def _rotate(t, start, theta=10000.0, pairing="half"):
    """t [..., T, e] rotated at positions start..; ``pairing="interleaved"``: pairs (0, 1), (2, 3), ..."""
    half = t.shape[-1] // 2
    inv_freq = theta ** -(torch.arange(0, 2 * half, 2, dtype=torch.float64) / (2 * half))  # [e/2]
    angles = torch.arange(start, start + t.shape[-2], dtype=torch.float64)[:, None] * inv_freq  # [T, e/2]
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # [T, e]
    if pairing == "half":
        return t * cos + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * sin
    even, odd = t[..., 0::2], t[..., 1::2]
    cos, sin = cos[..., :half], sin[..., :half]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def mla_variant(x, weights, size, start, end, pairing="half", rope_on_latent=False, norm=True, scale="qk",
                kv_order="head", rotary_score=True, rotate_key=True):
    """The output for x[:, start:end] with x[:, :start] cached, and the cached latent and rotary key of x[:, :end]."""
    _, n_heads, rank, nope, rope, v_dim, q_rank = size
    w = {key: t.double() for key, t in weights.items()}
    x = x.double()
    new = x[:, start:end]
    if q_rank is None:
        q = new @ w["q_proj.weight"].T
    else:
        q = _rms(new @ w["q_a_proj.weight"].T, w["q_a_layernorm.weight"]) @ w["q_b_proj.weight"].T
    q = q.view(x.shape[0], end - start, n_heads, nope + rope).transpose(1, 2)  # [B, H, Tq, dn+dr]
    q_nope, q_rot = q.split([nope, rope], dim=-1)
    q_rot = _rotate(q_rot, start, pairing=pairing)
    latent, k_rot = (x[:, :end] @ w["kv_a_proj_with_mqa.weight"].T).split([rank, rope], dim=-1)
    latent = _rms(latent, w["kv_a_layernorm.weight"]) if norm else latent
    latent = _rotate(latent, 0) if rope_on_latent else latent
    k_rot = _rotate(k_rot, 0, pairing=pairing) if rotate_key else k_rot
    per_head = w["kv_b_proj.weight"]
    heads = (per_head.view(n_heads, nope + v_dim, rank) if kv_order != "heads inner"
             else per_head.view(nope + v_dim, n_heads, rank).transpose(0, 1))  # [H, dn+dv, r]
    if kv_order == "swapped":
        w_uv, w_uk = heads.split([v_dim, nope], dim=1)
    else:
        w_uk, w_uv = heads.split([nope, v_dim], dim=1)
    k_nope = torch.einsum("btr,hdr->bhtd", latent, w_uk)  # [B, H, T, dn]
    v = torch.einsum("btr,hdr->bhtd", latent, w_uv)  # [B, H, T, dv]
    scores = q_nope @ k_nope.transpose(-2, -1)
    if rotary_score:
        scores = scores + q_rot @ k_rot[:, None].transpose(-2, -1)
    scores = scores * {"qk": nope + rope, "nope": nope, "latent": rank}[scale] ** -0.5
    allowed = torch.ones(end - start, end, dtype=torch.bool).tril(start)
    y = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v  # [B, H, Tq, dv]
    y = y.transpose(1, 2).reshape(x.shape[0], end - start, -1) @ w["o_proj.weight"].T
    return y, latent, k_rot


def _chunks():
    start = 0
    for n_new in kernel.CHUNKS:
        yield start, start + n_new
        start += n_new


def _inputs(case):
    """x and the weights as the layer gets them, rounded to the case's dtype (then float64): the reference is exact
    for the inputs the student's code computes with, so that the tolerance covers its own rounding only."""
    dtype = case["dtype"]
    return case["x"].to(dtype).double(), {key: t.to(dtype).double() for key, t in case["weights"].items()}


def _whole(case):
    x, weights = _inputs(case)
    if case["oracle"] == "hugging face":
        from attention_course.hf_compat import deepseek_attention_output, random_deepseek_attention_layer

        layer = random_deepseek_attention_layer(*case["size"], torch.Generator().manual_seed(0))
        layer.load_state_dict(weights)  # strict: the contract's layout is Hugging Face's
        with torch.no_grad():
            return deepseek_attention_output(layer, x)
    return mla_variant(x, weights, case["size"], 0, x.shape[1])[0]


def layer_expected(case) -> dict:
    if case["kind"] == "raises":
        return {"layer": (RAISES, "ValueError", ODD_ROPE)}
    if case["kind"] == "layout":
        return {}
    if case["kind"] == "decode":
        return {"output shape": str((case["x"].shape[0], 1, case["x"].shape[2]))}
    _, n_heads, rank, nope, rope, v_dim, _ = case["size"]
    dtype = case["dtype"]
    whole = _whole(case).to(dtype)
    expected = {"y": whole}
    for start, end in _chunks():
        expected[f"cache length after x[:, :{end}]"] = end
        expected[f"x[:, {start}:{end}] after {start} cached"] = whole[:, start:end]
    _, latent, k_rot = mla_variant(*_inputs(case), case["size"], 0, kernel.CHUNKS[0])
    return expected | {kernel.CACHED_WIDTH: rank + rope, "the cached latent": latent.to(dtype),
                       "the cached rotary key": k_rot.to(dtype)}


def _layer_mistakes(case, absorbed: bool) -> dict:
    if case["kind"] != "values":
        return {}
    _, n_heads, rank, nope, rope, v_dim, _ = case["size"]
    (x, weights), size = _inputs(case), case["size"]
    variants = {ROPE_ON_LATENT: {"rope_on_latent": True}, NOT_NORMED: {"norm": False}, INTERLEAVED: {"pairing": "interleaved"},
                NOT_ROTATED: {"rotate_key": False}, SCALE_NOPE: {"scale": "nope"}}
    if absorbed:
        variants |= {SCALE_LATENT: {"scale": "latent"}, HEADS_INNER: {"kv_order": "heads inner"},
                     ROPE_DROPPED: {"rotary_score": False}}
        if nope == v_dim:
            variants[SWAPPED] = {"kv_order": "swapped"}
    whole = {message: mla_variant(x, weights, size, 0, x.shape[1], **kw)[0] for message, kw in variants.items()}
    found = {"y": whole}
    for start, end in _chunks():
        found[f"cache length after x[:, :{end}]"] = {NOT_UPDATED: start}
        found[f"x[:, {start}:{end}] after {start} cached"] = {message: y[:, start:end] for message, y in whole.items()}
    first = kernel.CHUNKS[0]
    found["the cached latent"] = {message: mla_variant(x, weights, size, 0, first, **variants[message])[1]
                                  for message in (ROPE_ON_LATENT, NOT_NORMED)}
    found["the cached rotary key"] = {message: mla_variant(x, weights, size, 0, first, **variants[message])[2]
                                      for message in (INTERLEAVED, NOT_ROTATED)}
    found[kernel.CACHED_WIDTH] = {UP_PROJECTED: n_heads * (nope + rope + v_dim),
                                  f"{UP_PROJECTED} (here with the rotary key once)": n_heads * (nope + v_dim) + rope}
    return found


def _layout_problem(case, outputs) -> str:
    if case["kind"] == "decode":
        return _decode_problem(case, outputs)
    if case["kind"] != "layout":
        return ""
    expected = kernel.mla_shapes(*case["size"])
    try:
        theirs = {str(key): tuple(int(n) for n in dims) for key, dims in outputs["state_dict"]}
    except (KeyError, TypeError, ValueError):
        return "the layer's state_dict did not come back"
    if theirs == expected:
        return ""
    missing, extra = sorted(set(expected) - set(theirs)), sorted(set(theirs) - set(expected))
    wrong = {key: (theirs[key], expected[key]) for key in sorted(set(theirs) & set(expected)) if theirs[key] != expected[key]}
    return ("parameters differ from Hugging Face's DeepseekV3Attention (q_proj, or q_a_proj / q_a_layernorm / q_b_proj with "
            "q_lora_rank; kv_a_proj_with_mqa D -> r + dr, kv_a_layernorm, kv_b_proj r -> H*(dn + dv), o_proj H*dv -> D; "
            f"no biases). Missing: {missing or 'none'}; unexpected: {extra or 'none'}; wrong shapes (got, expected): {wrong or 'none'}")


def _decode_problem(case, outputs) -> str:
    batch, length = kernel.DECODE_SHAPE
    _, n_heads, rank, _, _, _, _ = case["size"]
    limit = batch * n_heads * (length + 1) * rank * 4 // 2  # half an H-fold float32 copy of the latent
    largest = outputs.get("largest new tensor")
    if isinstance(largest, bool) or not isinstance(largest, int) or largest >= limit:
        shown = f"{largest:,}" if isinstance(largest, int) else repr(largest)
        return (f"{PER_HEAD_COPY} (torch.{outputs.get('made by')} allocated {shown} bytes; the latent cache holds "
                f"{batch * (length + 1) * rank * 4:,}, the scores {batch * n_heads * (length + 1) * 4:,})")
    return ""


def _describe_layer(case) -> str:
    d_model, n_heads, rank, nope, rope, v_dim, q_rank = case["size"]
    name = f"MultiHeadLatentAttention({d_model}, {n_heads}, {rank}, {nope}, {rope}, {v_dim}, q_lora_rank={q_rank})"
    if case["kind"] in ("raises", "layout"):
        return name
    if case["kind"] == "decode":
        return f"{name}: one absorbed decode step after {kernel.DECODE_SHAPE[1]} cached tokens"
    oracle = " vs Hugging Face's DeepseekV3Attention" if case["oracle"] == "hugging face" else ""
    how = ", absorbed=True" if case["absorbed"] else ""
    return f"{name} on x{shape(case['x'])}{how}, DeepSeek's weights{oracle} [{case['dtype']}]"


# ----------------------------------------------------------------------------------------------
# PagedKVCache
# ----------------------------------------------------------------------------------------------


def _accounting(case, blocks_for, frees: bool = True) -> dict:
    """The block counts a cache gives when a sequence of n > 0 tokens holds ``blocks_for(n)`` blocks, and whose
    ``free`` gives them back (or not)."""
    free, lengths, outputs = case["n_blocks"], {}, {}

    def held(seq_id):
        return blocks_for(lengths[seq_id]) if lengths[seq_id] else 0

    for index, (op, seq_id, n_new) in enumerate(case["script"]):
        label = f"step {index} ({op} {seq_id})"
        if op == "allocate":
            lengths[seq_id] = 0
        elif op == "append":
            before = held(seq_id)
            lengths[seq_id] += n_new
            free -= held(seq_id) - before
        else:
            free += held(seq_id) if frees else 0
            del lengths[seq_id]
        if op != "free":
            outputs[f"{label}: blocks of sequence {seq_id}"] = held(seq_id)
        outputs[f"{label}: free blocks"] = free
    return outputs


def _paged_expected(case) -> dict:
    cache = ref.PagedKVCache(case["n_blocks"], case["block_size"], 2, 4, dtype=torch.float64)
    outputs, alive = {}, []
    for index, ((op, seq_id, _), chunk) in enumerate(zip(case["script"], case["chunks"])):
        label = f"step {index} ({op} {seq_id})"
        if op == "allocate":
            cache.allocate(seq_id)
            alive.append(seq_id)
        elif op == "append":
            cache.append(seq_id, chunk[0], chunk[1])
        else:
            cache.free(seq_id)
            alive.remove(seq_id)
        if op != "free":
            outputs[f"{label}: blocks of sequence {seq_id}"] = len(cache.block_tables[seq_id])
        outputs[f"{label}: free blocks"] = cache.n_free_blocks
    for seq_id in alive:
        keys, values = cache.gather(seq_id)
        outputs[f"sequence {seq_id}'s gathered keys"], outputs[f"sequence {seq_id}'s gathered values"] = keys, values
    if alive:
        outputs["appending past the pool's last free block"] = (RAISES, "ValueError", "more tokens than the free blocks hold")
    return outputs


def _paged_mistakes(case) -> dict:
    size = case["block_size"]
    found: dict = {}
    for message, blocks_for, frees in ((PER_TOKEN, lambda n: n, True), (OVER_ALLOCATED, lambda n: n // size + 1, True),
                                       (NOT_FREED, lambda n: -(-n // size), False)):
        for key, value in _accounting(case, blocks_for, frees).items():
            found.setdefault(key, {})[message] = value
    return found


def _describe_paged(case) -> str:
    return (f"PagedKVCache({case['n_blocks']} blocks of {case['block_size']}, G=2, d=4) through "
            f"{len(case['script'])} steps: {', '.join(f'{op} {s}' + (f' +{n}' if n else '') for op, s, n in case['script'])}")


# ----------------------------------------------------------------------------------------------
# paged_attention
# ----------------------------------------------------------------------------------------------


def _contiguous(case, table, length):
    keys = case["keys"][table].flatten(0, 1)[:length].transpose(0, 1)  # [G, T, d]
    values = case["values"][table].flatten(0, 1)[:length].transpose(0, 1)
    return keys[None], values[None]  # [1, G, T, d]


def _paged_attention_expected(case) -> dict:
    keys, values = _contiguous(case, case["table"], case["length"])
    return {"y": grouped_variant(case["q"][None], keys, values)[0].to(case["dtype"])}


def _paged_attention_mistakes(case) -> dict:
    q, table, length = case["q"][None], case["table"], case["length"]
    found = {}
    if table != sorted(table):
        found[POOL_ORDER] = grouped_variant(q, *_contiguous(case, sorted(table), length))[0]
    padded = len(table) * case["block_size"]
    if padded > length:
        found[PADDING_ATTENDED] = grouped_variant(q, *_contiguous(case, table, padded))[0]
    keys, values = _contiguous(case, table, length)
    if q.shape[-2] < length:
        found[TOP_LEFT] = grouped_variant(q, keys, values, mask="top_left")[0]
    if keys.shape[1] not in (1, q.shape[1]):
        found[MODULO] = grouped_variant(q, keys, values, pairing="modulo")[0]
    return {"y": found}


def _describe_paged_attention(case) -> str:
    n_blocks, block_size, n_kv, head_dim = case["keys"].shape
    return (f"paged_attention(q{shape(case['q'])}, a pool of {n_blocks} blocks of {block_size} (G={n_kv}, d={head_dim}), "
            f"a sequence of {case['length']} tokens in blocks {case['table']}) [{case['dtype']}]")


CACHE_BYTES = Exercise("test_cache_bytes", "mla_cache_bytes", kernel.bytes_cases, kernel.run_bytes, _bytes_expected,
                       _describe_bytes, _bytes_mistakes)
LATENT_ATTENTION = Exercise("test_module", "MultiHeadLatentAttention and LatentCache", kernel.layer_cases, kernel.run_layer,
                            layer_expected, _describe_layer, lambda case: _layer_mistakes(case, False), _layout_problem)
ABSORBED = Exercise("test_absorbed", "MultiHeadLatentAttention(absorbed=True)", kernel.absorbed_cases, kernel.run_absorbed,
                    layer_expected, _describe_layer, lambda case: _layer_mistakes(case, True), _layout_problem)
PAGED_CACHE = Exercise("test_paged_cache", "PagedKVCache", kernel.paged_cache_cases, kernel.run_paged_cache, _paged_expected,
                       _describe_paged, _paged_mistakes)
PAGED_ATTENTION = Exercise("test_paged_attention", "paged_attention", kernel.paged_attention_cases, kernel.run_paged_attention,
                           _paged_attention_expected, _describe_paged_attention, _paged_attention_mistakes)
EXERCISES = (CACHE_BYTES, LATENT_ATTENTION, ABSORBED, PAGED_CACHE, PAGED_ATTENTION)
