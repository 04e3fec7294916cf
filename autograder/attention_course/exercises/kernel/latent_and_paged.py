"""07_latent_and_paged, kernel half: the inputs of each exercise and how the student's code is called.

The MLA layer gets weights drawn in Hugging Face's ``DeepseekV3Attention`` layout (``mla_shapes``, with and
without the low-rank query projection, layer-norm weights drawn too: fresh ones are all 1); its layout, its
output over a whole sequence, its output in cached chunks through the student's ``LatentCache``, and what
that cache holds after the prefill, are measured here, plainly and absorbed; an absorbed decode step is
measured for the largest tensor it makes. The paged cache runs a script of allocations, appends and frees;
paged attention reads a pool whose blocks are shuffled and whose unused slots hold noise."""

import torch

from attention_course.exercises.kernel.allocations import NewStorages
from attention_course.exercises.kernel.devices import returned_tensors
from attention_course.exercises.kernel.draw import dtypes, integer, raised, randn

LAYER_LENGTH, CHUNKS = 7, (3, 2, 1, 1)  # x [2, 7, D]: a prefill of 3, a chunk of 2, then single tokens
DECODE_SHAPE = (2, 256)  # (B, cached tokens) of the absorbed decode step whose allocations are measured
CACHED_WIDTH = "numbers the cache holds per token"


def mla_shapes(d_model, n_heads, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, q_lora_rank):
    """The layer's state_dict as Hugging Face's DeepseekV3Attention holds it (nn.Linear weights [out, in], no biases)."""
    qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
    if q_lora_rank is None:
        shapes = {"q_proj.weight": (n_heads * qk_head_dim, d_model)}
    else:
        shapes = {"q_a_proj.weight": (q_lora_rank, d_model), "q_a_layernorm.weight": (q_lora_rank,),
                  "q_b_proj.weight": (n_heads * qk_head_dim, q_lora_rank)}
    return shapes | {"kv_a_proj_with_mqa.weight": (kv_lora_rank + qk_rope_head_dim, d_model),
                     "kv_a_layernorm.weight": (kv_lora_rank,),
                     "kv_b_proj.weight": (n_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank),
                     "o_proj.weight": (d_model, n_heads * v_head_dim)}


# ----------------------------------------------------------------------------------------------
# mla_cache_bytes
# ----------------------------------------------------------------------------------------------


# DeepSeek's published layers (the reference half checks these against real modules): one 32,768-token sequence, bfloat16.
REAL_CACHES = {"DeepSeek-V2": (1, 60, 512, 64, 32768, 2), "DeepSeek-V3": (1, 61, 512, 64, 32768, 2)}


def bytes_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(batch, layers, kv_lora_rank, qk_rope_head_dim, seq_len, bytes per element); thorough: DeepSeek-V2 and -V3's
    real layers too (the reference half reads them off real modules on the meta device)."""
    args = [(1, 60, 512, 64, 4096, 2), (2, 4, 32, 8, 100, 4), (3, 2, 16, 4, 7, 1)]
    cases = [{"args": a} for a in args]
    if thorough:
        for _ in range(4):
            args = (integer(generator, 1, 8), integer(generator, 1, 64), 16 * integer(generator, 1, 32),
                    8 * integer(generator, 1, 8), integer(generator, 1, 9000), 2 ** integer(generator, 0, 2))
            cases.append({"args": args})
        cases += [{"real": name, "args": args} for name, args in REAL_CACHES.items()]
    return cases


def run_bytes(student, case) -> dict:
    return {"bytes": student.mla_cache_bytes(*case["args"])}


# ----------------------------------------------------------------------------------------------
# MultiHeadLatentAttention and LatentCache
# ----------------------------------------------------------------------------------------------


def _layer_sizes(generator: torch.Generator, thorough: bool) -> list[tuple]:
    """(D, H, r, dn, dr, dv, q_lora_rank); dn == dv in the first (where swapping keys and values shows in values only)."""
    sizes = [(32, 4, 16, 8, 4, 8, None), (48, 3, 24, 8, 8, 12, 16)]
    if thorough:
        sizes += [(64, 8, 32, 16, 8, 16, 24), (32, 2, 8, 4, 6, 8, None)]
        heads = integer(generator, 2, 6)
        sizes.append((8 * heads, heads, 8 * integer(generator, 1, 4), 4 * integer(generator, 1, 3), 2 * integer(generator, 1, 4),
                      4 * integer(generator, 1, 3), None if integer(generator, 0, 1) else 8 * integer(generator, 1, 3)))
    return sizes


def layer_cases(generator: torch.Generator, thorough: bool, absorbed: bool = False) -> list[dict]:
    """Per size: its layout (not when absorbed: the module exercise judges it), then x [2, 7, D] whole and in cached
    chunks, in every dtype under test (float32 only in visible cases; against Hugging Face's DeepseekV3Attention in
    thorough ones)."""
    cases = []
    for index, size in enumerate(_layer_sizes(generator, thorough)):
        weights, x = mla_weights(generator, size), randn(generator, 2, LAYER_LENGTH, size[0])
        if not absorbed:
            cases.append({"kind": "layout", "size": size})
        runs = dtypes(thorough) + ([torch.float16, torch.bfloat16] if not thorough and index == 0 else [])  # half: met before hand-in
        cases += [{"kind": "values", "size": size, "weights": weights, "x": x, "dtype": dtype, "absorbed": absorbed,
                   "oracle": "hugging face" if thorough else "reference"} for dtype in runs]
    return cases + [{"kind": "raises", "size": (32, 4, 16, 8, 5, 8, None), "absorbed": absorbed}]


def absorbed_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    cases = layer_cases(generator, thorough, absorbed=True)
    size = (64, 8, 16, 32, 8, 32, None)  # per-head keys (dn = 32) far wider than the latent (r = 16)
    return cases + [{"kind": "decode", "size": size, "weights": mla_weights(generator, size),
                     "x": randn(generator, DECODE_SHAPE[0], DECODE_SHAPE[1] + 1, 64)}]


def mla_weights(generator: torch.Generator, size) -> dict[str, torch.Tensor]:
    """Weights in the layout of ``mla_shapes``, float64: projections N(0, 1 / fan_in); the RMSNorms' weights drawn from
    [0.5, 1.5] (not all 1, where a forgotten one would not show; not so spread that half precision loses the signal)."""
    return {key: randn(generator, *dims, scale=dims[-1] ** -0.5) if len(dims) == 2
            else 0.5 + torch.rand(*dims, generator=generator, dtype=torch.float64)
            for key, dims in mla_shapes(*size).items()}


def _build(student, size):
    d_model, n_heads, rank, nope, rope, v_dim, q_rank = size
    return student.MultiHeadLatentAttention(d_model, n_heads, rank, nope, rope, v_dim, q_lora_rank=q_rank)


def _cached_per_token(cache, batch: int, max_len: int):
    # Numbers held, each storage once, whole: two views of one buffer (latent and rotary key side by side) count once.
    tensors = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // t.element_size() for t in returned_tensors(cache)}
    total = sum(tensors.values())
    return total // (batch * max_len) if total % (batch * max_len) == 0 else total / (batch * max_len)


def run_layer(student, case) -> dict:
    d_model, n_heads, rank, nope, rope, v_dim, q_rank = case["size"]
    if case["kind"] == "raises":
        return {"layer": raised(_build, student, case["size"])}
    layer = _build(student, case["size"])
    if case["kind"] == "layout":
        return {"state_dict": tuple((key, tuple(int(n) for n in t.shape)) for key, t in layer.state_dict().items())}
    layer.load_state_dict(case["weights"])
    if case["kind"] == "decode":
        return _run_decode(student, layer, case)
    dtype, absorbed = case["dtype"], case["absorbed"]
    layer = layer.to(dtype).eval()
    x = case["x"].to(dtype)
    outputs = {}
    with torch.no_grad():
        outputs["y"] = layer(x, absorbed=absorbed)
        cache, start = student.LatentCache(x.shape[0], rank, rope, x.shape[1], dtype=dtype, device=x.device), 0
        for n_new in CHUNKS:
            end = start + n_new
            y = layer(x[:, start:end], cache=cache, absorbed=absorbed)
            outputs[f"cache length after x[:, :{end}]"] = len(cache)
            outputs[f"x[:, {start}:{end}] after {start} cached"] = y
            if start == 0:  # after the prefill: what the contract's buffers hold
                for name, attribute in (("the cached latent", "latent"), ("the cached rotary key", "k_rot")):
                    buffer = getattr(cache, attribute, None)
                    outputs[name] = buffer[:, :end].clone() if isinstance(buffer, torch.Tensor) else buffer
            start = end
        outputs[CACHED_WIDTH] = _cached_per_token(cache, x.shape[0], x.shape[1])
    return outputs


def _run_decode(student, layer, case) -> dict:
    """One absorbed decode step after a prefill: its output's shape and the largest tensor it makes."""
    _, _, rank, _, rope, _, _ = case["size"]
    x = case["x"].float()
    layer = layer.float().eval()
    cache = student.LatentCache(x.shape[0], rank, rope, x.shape[1], dtype=torch.float32, device=x.device)
    with torch.no_grad():
        layer(x[:, :-1], cache=cache, absorbed=True)
        allocations = NewStorages()
        with allocations:
            y = layer(x[:, -1:], cache=cache, absorbed=True)
    largest, operation = allocations.largest
    return {"output shape": str(tuple(y.shape)) if isinstance(y, torch.Tensor) else type(y).__name__,
            "largest new tensor": largest, "made by": operation}


def run_absorbed(student, case) -> dict:
    return run_layer(student, case)


# ----------------------------------------------------------------------------------------------
# PagedKVCache
# ----------------------------------------------------------------------------------------------


def paged_cache_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """A pool and a script: (operation, sequence, tokens appended). Block sizes where lengths meet block ends exactly."""
    scripts = [(8, 4, [("allocate", 0, 0), ("append", 0, 5), ("allocate", 1, 0), ("append", 1, 4), ("append", 0, 3),
                       ("append", 1, 1), ("free", 0, 0), ("allocate", 2, 0), ("append", 2, 9), ("append", 2, 8)])]
    if thorough:
        for _ in range(3):
            n_blocks, block_size = integer(generator, 12, 30), integer(generator, 1, 5)
            script, lengths, next_id = [], {}, 0
            for _ in range(12):
                step = integer(generator, 0, 3)
                free = n_blocks - sum(-(-n // block_size) for n in lengths.values())
                if step == 0 or not lengths:
                    script.append(("allocate", next_id, 0))
                    lengths[next_id] = 0
                    next_id += 1
                elif step == 3 and len(lengths) > 1:
                    seq_id = next(iter(lengths))
                    script.append(("free", seq_id, 0))
                    del lengths[seq_id]
                else:
                    seq_id = list(lengths)[integer(generator, 0, len(lengths) - 1)]
                    room = free * block_size + (-lengths[seq_id]) % block_size  # what fits in the pool
                    n_new = min(integer(generator, 1, 3 * block_size), room)
                    if n_new:
                        script.append(("append", seq_id, n_new))
                        lengths[seq_id] += n_new
            scripts.append((n_blocks, block_size, script))
    cases = []
    for n_blocks, block_size, script in scripts:
        chunks = [randn(generator, 2, n_new, 2, 4) if op == "append" else None for op, _, n_new in script]
        cases.append({"n_blocks": n_blocks, "block_size": block_size, "script": script, "chunks": chunks})
    return cases


def run_paged_cache(student, case) -> dict:
    """After each step: the sequence's blocks and tokens and the pool's free blocks; at the end each live sequence's
    gathered keys and values; an append past the pool's end must raise ValueError (the script's pool has room)."""
    cache = student.PagedKVCache(case["n_blocks"], case["block_size"], 2, 4, dtype=torch.float64)
    outputs, alive = {}, []
    for index, ((op, seq_id, _), chunk) in enumerate(zip(case["script"], case["chunks"])):
        label = f"step {index} ({op} {seq_id})"
        steps = {"allocate": lambda: cache.allocate(seq_id), "free": lambda: cache.free(seq_id),
                 "append": lambda: cache.append(seq_id, chunk[0], chunk[1])}
        done = raised(steps[op])
        if isinstance(done, tuple):  # the script fits the pool: an error here is the cache's; its counts so far are judged
            return outputs | {f"{label}: free blocks": done}
        if op == "allocate":
            alive.append(seq_id)
        elif op == "free":
            alive.remove(seq_id)
        if op != "free":
            outputs[f"{label}: blocks of sequence {seq_id}"] = len(cache.block_tables[seq_id])
        outputs[f"{label}: free blocks"] = cache.n_free_blocks
    for seq_id in alive:
        keys, values = cache.gather(seq_id)
        outputs[f"sequence {seq_id}'s gathered keys"], outputs[f"sequence {seq_id}'s gathered values"] = keys, values
    if alive:
        seq_id = alive[-1]
        too_many = (cache.n_free_blocks + 1) * case["block_size"]
        outputs["appending past the pool's last free block"] = raised(
            cache.append, seq_id, torch.zeros(too_many, 2, 4, dtype=torch.float64), torch.zeros(too_many, 2, 4, dtype=torch.float64))
    return outputs


# ----------------------------------------------------------------------------------------------
# paged_attention
# ----------------------------------------------------------------------------------------------


class ShuffledPool:
    """A paged cache as the contract lays it out (``keys``, ``values`` [n_blocks, block_size, G, d], ``block_tables``,
    ``lengths``, ``block_size``), filled by this harness: a sequence's blocks scattered over the pool in a drawn order,
    the slots past its length and the other blocks full of noise (read them and the output changes)."""

    def __init__(self, keys, values, block_tables, lengths, block_size):
        self.keys, self.values, self.block_tables, self.lengths, self.block_size = keys, values, block_tables, lengths, block_size


def paged_attention_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(H, G, d, block_size, length, Tq), in each dtype under test."""
    shapes = [(4, 2, 8, 4, 10, 1), (6, 3, 4, 3, 7, 3), (2, 2, 8, 5, 5, 5)]
    if thorough:
        shapes += [(8, 1, 16, 16, 40, 1), (4, 4, 8, 2, 9, 2)]
        n_kv = integer(generator, 1, 3)
        shapes.append((n_kv * integer(generator, 1, 3), n_kv, 4 * integer(generator, 1, 3), integer(generator, 1, 6),
                       integer(generator, 1, 30), 1))
    cases = []
    for dtype in dtypes(thorough):
        for n_heads, n_kv, head_dim, block_size, length, n_queries in shapes:
            n_blocks = -(-length // block_size)
            pool = 2 * n_blocks + 3
            order = torch.randperm(pool, generator=generator)[:n_blocks].tolist()
            keys, values = randn(generator, pool, block_size, n_kv, head_dim), randn(generator, pool, block_size, n_kv, head_dim)
            q = randn(generator, n_heads, min(n_queries, length), head_dim)
            cases.append({"keys": keys, "values": values, "table": order, "length": length, "block_size": block_size,
                          "q": q, "dtype": dtype})
    return cases


def run_paged_attention(student, case) -> dict:
    dtype = case["dtype"]
    pool = ShuffledPool(case["keys"].to(dtype), case["values"].to(dtype), {7: list(case["table"])}, {7: case["length"]},
                        case["block_size"])
    return {"y": student.paged_attention(case["q"].to(dtype), pool, 7)}
