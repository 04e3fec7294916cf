"""02_kv_cache, kernel half: the inputs of each exercise and how the student's code is called.

Each exercise is isolated: ``cached_gpt2_attention`` runs with the harness's own cache
(``HarnessCache``) and ``greedy_generate`` with the harness's decoder (``GPT2Decoder`` on a tiny
seeded GPT-2, through ``harness_attention`` and ``HarnessCache``), so that one mistake costs one
exercise. Visible cases (seed 0) are float32, float16 and bfloat16 on the CPU; thorough ones add
shapes drawn from the seed, batch > 1, multi-token updates after a prefill, and a Hugging Face
oracle. What needs the live objects (whether the cache's returned tensors share one buffer, how the
model was called) is measured here and returned as plain data."""

import torch

from attention_course.exercises.kernel.causal_attention import gpt2_weights
from attention_course.exercises.kernel.devices import device_problem
from attention_course.exercises.kernel.draw import RAISES, devices, integer, raised, randn
from attention_course.gpt2_forward import GPT2Decoder
from attention_course.kernels.causal import attention, merge_heads, split_heads

DEVICE = "on the meta device"  # a requirement measured where the code runs: '' when met
PAIR = "a pair (k_all, v_all)"
HALF_PRECISION = [torch.float16, torch.bfloat16]  # visible cases meet them too: the exercise asks for them


def _dtypes() -> list[torch.dtype]:
    return [torch.float32, *HALF_PRECISION]


def _chunks(generator: torch.Generator, total: int) -> list[int]:
    """Sizes of a prefill shorter than ``total`` and the chunks after it (some of one token)."""
    sizes = [integer(generator, 1, min(4, total - 1))]
    while sum(sizes) < total:
        sizes.append(min(integer(generator, 1, 3), total - sum(sizes)))
    return sizes


# ----------------------------------------------------------------------------------------------
# The harness: a correct cache and cached attention, the decoder a greedy_generate is handed
# ----------------------------------------------------------------------------------------------


class HarnessCache:
    """A correct KV cache (the contract of ``KVCache``): preallocated [B, G, max_len, d]
    buffers, laid out as the notebook's solution lays them out (``keys``, ``values``, ``length``)."""

    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.overflowed = False  # an update past max_len was asked for

    def __len__(self) -> int:
        return self.length

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor):
        end = self.length + k_new.shape[2]
        if end > self.keys.shape[2]:
            self.overflowed = True
            raise ValueError(f"the cache is full: {self.length} cached + {k_new.shape[2]} new > max_len {self.keys.shape[2]}")
        self.keys[:, :, self.length : end] = k_new
        self.values[:, :, self.length : end] = v_new
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def harness_attention(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache):
    """A correct cached GPT-2 attention layer, from the hand-overs of 01."""
    width = x_new.shape[-1]
    q, k, v = (split_heads(t, n_heads) for t in (x_new @ c_attn_weight + c_attn_bias).split(width, dim=-1))
    k_all, v_all = cache.update(k, v)
    return merge_heads(attention(q, k_all, v_all, causal=True)) @ c_proj_weight + c_proj_bias


# The tiny GPT-2 greedy_generate decodes with: the sizes and initialisation of the course's local
# GPT-2 (models.local_gpt2: byte-level vocabulary of 257, initializer_range 0.2), seeded.
GPT2_SIZES = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 128}
VOCAB_SIZE = 257
_MODELS: dict = {}


def harness_gpt2(seed: int = 0):
    """The Hugging Face GPT2LMHeadModel of the harness (seeded random weights, eager attention), kept."""
    if seed not in _MODELS:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=VOCAB_SIZE, bos_token_id=VOCAB_SIZE - 1, eos_token_id=VOCAB_SIZE - 1,
                            initializer_range=0.2, **GPT2_SIZES)
        config._attn_implementation = "eager"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _MODELS[seed] = GPT2LMHeadModel(config).to("cpu").eval()
    return _MODELS[seed]


class HarnessModel:
    """What greedy_generate is handed: ``model(ids, caches=None)`` and ``model.new_caches(batch, max_len)``
    of a GPT2Decoder over the harness GPT-2 (``device``, ``dtype`` and ``config`` to read). The decoder
    and the Hugging Face model are kept under ``_`` names, which answers cannot reach. Records each call:
    (new tokens, with caches?)."""

    def __init__(self, seed: int = 0):
        self._decoder = GPT2Decoder(harness_gpt2(seed), harness_attention, HarnessCache)
        self._calls: list[tuple[int, bool]] = []
        self._caches: list[HarnessCache] = []

    @property
    def config(self):
        return self._decoder.config

    @property
    def device(self) -> torch.device:
        return self._decoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self._decoder.dtype

    def new_caches(self, batch_size: int, max_len: int) -> list:
        caches = self._decoder.new_caches(batch_size, max_len)
        self._caches += caches
        return caches

    def __call__(self, input_ids: torch.Tensor, caches=None) -> torch.Tensor:
        self._calls.append((int(input_ids.shape[-1]), caches is not None))
        return self._decoder(input_ids, caches)


# ----------------------------------------------------------------------------------------------
# KVCache
# ----------------------------------------------------------------------------------------------


def cache_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(batch, kv_heads, head_dim, max_len, chunk sizes) in each dtype; then must-raise and meta cases."""
    sizes = [(1, 2, 4, 8, [3, 1, 1]), (2, 3, 8, 10, [4, 2, 1, 3])]
    if thorough:
        sizes += [(3, 1, 16, 12, [1] * 12), (2, 4, 8, 9, [5, 4]), (1, 2, 32, 20, [7, 1, 1, 6, 1]), (4, 2, 4, 6, [6])]
        for _ in range(2):
            max_len = integer(generator, 3, 12)
            sizes.append((integer(generator, 1, 3), integer(generator, 1, 4), integer(generator, 1, 8), max_len,
                          _chunks(generator, max_len)))
    cases = []
    for device in devices(thorough):
        for dtype in _dtypes():
            for batch, kv_heads, head_dim, max_len, chunks in sizes:
                updates = [tuple(randn(generator, batch, kv_heads, n, head_dim).to(device=device, dtype=dtype) for _ in "kv")
                           for n in chunks]
                cases.append({"kind": "values", "size": (batch, kv_heads, head_dim, max_len), "dtype": dtype, "device": device,
                              "updates": updates})
    cases.append({"kind": "raises", "size": (1, 1, 2, 3), "dtype": torch.float32, "device": "cpu",
                  "updates": [(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))]})
    return cases + [{"kind": "meta", "size": (1, 2, 4, 8), "dtype": torch.float32, "device": "meta",
                     "updates": [(torch.empty(1, 2, 3, 4), torch.empty(1, 2, 3, 4))]}]


def update_name(case, step: int) -> str:
    previous = sum(k.shape[2] for k, _ in case["updates"][:step])
    return f"update {step + 1} ({case['updates'][step][0].shape[2]} new after {previous})"


def _storage(t) -> tuple[int, int]:
    if not isinstance(t, torch.Tensor):
        return (-1, 0)
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def run_cache(student, case) -> dict:
    size, dtype, device = case["size"], case["dtype"], case["device"]
    if case["kind"] == "meta":
        (k, v), = case["updates"]
        return {f"KVCache{size}, {DEVICE}": device_problem(student.KVCache, *size, device="meta"),
                f"update, {DEVICE}": device_problem(lambda k, v: student.KVCache(*size, device="meta").update(k, v), k, v)}
    cache = student.KVCache(*size, dtype=dtype, device=device)
    if case["kind"] == "raises":
        return {"update with more positions than max_len": raised(cache.update, *case["updates"][0])}
    outputs = {"len(cache) when new": len(cache)}
    returned = []  # kept alive, so that no storage is freed and its address reused
    for step, (k_new, v_new) in enumerate(case["updates"]):
        name = update_name(case, step)
        result = cache.update(k_new, v_new)
        pair = isinstance(result, (tuple, list)) and len(result) == 2
        outputs[f"{name}, what it returns"] = PAIR if pair else f"a {type(result).__name__}"
        if not pair:
            return outputs
        returned.append(tuple(result))
        outputs[f"{name}, keys"] = result[0].clone() if isinstance(result[0], torch.Tensor) else result[0]
        outputs[f"{name}, values"] = result[1].clone() if isinstance(result[1], torch.Tensor) else result[1]
        outputs[f"len(cache) after {name}"] = len(cache)
    batch, kv_heads, head_dim, max_len = size
    overflow = torch.zeros(batch, kv_heads, max_len - len(cache) + 1, head_dim, dtype=dtype, device=device)
    outputs["update past max_len"] = raised(cache.update, overflow, overflow.clone())
    keys, values = [_storage(k) for k, _ in returned], [_storage(v) for _, v in returned]
    outputs["bytes of the first keys' storage"] = keys[0][1]
    outputs["bytes of the first values' storage"] = values[0][1]
    outputs["updates returning keys in new memory"] = sum(ptr != keys[0][0] for ptr, _ in keys[1:])
    outputs["updates returning values in new memory"] = sum(ptr != values[0][0] for ptr, _ in values[1:])
    return outputs


# ----------------------------------------------------------------------------------------------
# cached_gpt2_attention
# ----------------------------------------------------------------------------------------------

HF_WIDTH, HF_HEADS = 48, 6  # the thorough case against Hugging Face's GPT2Attention


def attention_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(batch, width, heads, chunk sizes): a prefill, then steps or more chunks; in each dtype."""
    shapes = [(1, 16, 4, [4, 1, 1, 1]), (2, 12, 3, [3, 3, 2])]
    if thorough:
        shapes += [(3, 32, 8, [1] * 6), (2, 24, 2, [5, 1, 4, 1]), (1, 8, 1, [2, 7]), (2, 16, 4, [9])]
        for _ in range(2):
            heads, head_dim, length = integer(generator, 1, 4), integer(generator, 2, 8), integer(generator, 3, 10)
            shapes.append((integer(generator, 1, 3), heads * head_dim, heads, _chunks(generator, length)))
    cases = []
    for device in devices(thorough):
        for dtype in _dtypes():
            for batch, width, n_heads, chunks in shapes:
                tensors = [randn(generator, batch, sum(chunks), width), *gpt2_weights(generator, width)]
                x, *weights = (t.to(device=device, dtype=dtype) for t in tensors)
                cases.append({"kind": "values", "x": x, "weights": weights, "n_heads": n_heads, "chunks": chunks})
    if thorough:  # every parameter random, float32: prefill 5, then 4 one-token steps
        x, *weights = (t.float() for t in [randn(generator, 2, 9, HF_WIDTH), *gpt2_weights(generator, HF_WIDTH, scale=0.3)])
        cases.append({"kind": "hugging face", "x": x, "weights": weights, "n_heads": HF_HEADS, "chunks": [5, 1, 1, 1, 1]})
    meta = [torch.empty(1, 4, 12), *map(torch.empty, [(12, 36), (36,), (12, 12), (12,)])]
    return cases + [{"kind": "meta", "x": meta[0], "weights": meta[1:], "n_heads": 3, "chunks": [3, 1]}]


def step_name(case, step: int) -> str:
    start = sum(case["chunks"][:step])
    return f"call {step + 1} ({case['chunks'][step]} new after {start} cached)"


def _twice(fn, chunks, n_heads):
    def calls(x, *weights):
        batch, _, width = x.shape
        cache = HarnessCache(batch, n_heads, width // n_heads, x.shape[1], dtype=x.dtype, device=x.device)
        return [fn(x[:, :chunks[0]], *weights, n_heads, cache), fn(x[:, chunks[0]:], *weights, n_heads, cache)]
    return calls


def run_cached_attention(student, case) -> dict:
    x, weights, n_heads = case["x"], case["weights"], case["n_heads"]
    if case["kind"] == "meta":
        return {DEVICE: device_problem(_twice(student.cached_gpt2_attention, case["chunks"], n_heads), x, *weights)}
    batch, length, width = x.shape
    cache = HarnessCache(batch, n_heads, width // n_heads, length, dtype=x.dtype, device=x.device)
    outputs, start = {}, 0
    with torch.no_grad():
        for step, n_new in enumerate(case["chunks"]):
            name = step_name(case, step)
            outputs[f"{name}, y"] = student.cached_gpt2_attention(x[:, start : start + n_new], *weights, n_heads, cache)
            outputs[f"len(cache) after {name}"] = len(cache)
            start += n_new
    return outputs


# ----------------------------------------------------------------------------------------------
# greedy_generate
# ----------------------------------------------------------------------------------------------


def generate_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(batch, prompt length, max_new_tokens), each with and without the cache."""
    sizes = [(1, 5, 6)]
    if thorough:
        sizes += [(2, 3, 10), (3, 8, 1), (1, 1, 12)]
        sizes += [(integer(generator, 1, 3), integer(generator, 1, 8), integer(generator, 2, 9)) for _ in range(2)]
    cases = []
    for batch, length, n_new in sizes:
        prompt = torch.randint(0, VOCAB_SIZE, (batch, length), generator=generator)
        cases += [{"prompt": prompt, "n_new": n_new, "use_cache": use_cache} for use_cache in (True, False)]
    return cases


def run_generate(student, case) -> dict:
    model = HarnessModel()
    try:
        tokens = student.greedy_generate(model, case["prompt"], case["n_new"], use_cache=case["use_cache"])
    except ValueError:
        if not any(cache.overflowed for cache in model._caches):
            raise
        tokens = (RAISES, "ValueError")
    calls = torch.tensor(model._calls, dtype=torch.int64).reshape(-1, 2)
    return {"updates past a full cache": sum(cache.overflowed for cache in model._caches), "tokens": tokens, "calls": calls}


# ----------------------------------------------------------------------------------------------
# kv_cache_bytes
# ----------------------------------------------------------------------------------------------

# Real Hugging Face caches the grader measures after a forward pass (grader side: the reference half):
# (batch, layers, kv_heads, head_dim, seq_len, bytes) of each model and what it is.
REAL_CACHES = (
    ((2, 2, 4, 16, 11, 4), "gpt2"),  # the harness GPT-2, float32
    ((1, 3, 2, 16, 5, 2), "gpt2 float16"),  # 3 layers, 2 heads, width 32
    ((3, 3, 2, 16, 7, 2), "llama gqa bfloat16"),  # 8 query heads in 2 groups of key/value heads
)


def bytes_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(batch, layers, kv_heads, head_dim, seq_len, bytes_per_element)."""
    args = [(1, 12, 12, 64, 1024, 4), (2, 32, 8, 128, 4096, 2), (3, 4, 2, 16, 100, 4)]
    if thorough:
        args += [(1, 80, 8, 128, 4096, 2), (8, 32, 1, 64, 2048, 2), (1, 1, 1, 1, 1, 1), (5, 24, 16, 64, 777, 4),
                 (2, 48, 25, 64, 1024, 8), (16, 28, 4, 80, 8192, 1)]
        args += [(integer(generator, 1, 8), integer(generator, 1, 96), integer(generator, 1, 64), integer(generator, 16, 256),
                  integer(generator, 1, 9000), (1, 2, 4)[integer(generator, 0, 2)]) for _ in range(5)]
    cases = [{"args": a} for a in args]
    return cases + ([{"args": a, "real": model} for a, model in REAL_CACHES] if thorough else [])


def run_bytes(student, case) -> dict:
    return {"bytes": student.kv_cache_bytes(*case["args"])}
