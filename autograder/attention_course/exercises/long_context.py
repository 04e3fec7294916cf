"""06_long_context, reference half: what each exercise's outputs should be, the named mistakes they are
compared with when they are not, and what a comparison cannot judge (the kernel half:
``kernel/long_context.py``). Thorough layer cases are compared with Hugging Face's ``LlamaAttention``
(its real rotary embedding) and, with a sliding window, ``MistralAttention``, loaded with the case's weights."""

import torch

from attention_course.exercises import Exercise
from attention_course.exercises.gqa import group_of_heads, layout_problem
from attention_course.exercises.kernel import long_context as kernel
from attention_course.exercises.kernel.draw import RAISES, shape
from attention_course.kernels.causal import causal_mask
from attention_course.kernels.long_context import sliding_window_mask

DEVICE = kernel.DEVICE
HF_THETA = 10000.0  # the default a forgotten rope_theta falls back to

SPLIT = ("the frequencies use the exponent i / d: pair i turns by theta ** (-2i / d) (i = 0 .. d/2 - 1), so that the last pair "
         "turns about 1 / theta as fast as the first; with i / d the slowest pair is only 1 / sqrt(theta) as slow")
THETA_IGNORED = "theta was not used: the frequencies are theta ** (-2i / d) with the theta passed in (Llama-3 uses 500000, not 10000)"
RISING = "the exponent's sign is flipped: frequencies fall from 1 (pair 0) towards 1 / theta, theta ** (-2i / d), they do not grow"
DOUBLED = ("returned d frequencies (each pair's twice, as Hugging Face lays out its cos and sin tables): rope_frequencies returns one "
           "per pair, d / 2; duplicate them where you build the angles")
INTERLEAVED = ("the features were paired as (0, 1), (2, 3), ... (the RoPE paper's interleaved pairs): Llama and Hugging Face pair feature "
               "i with feature i + d/2 ('rotate half': x * cos + cat(-x2, x1) * sin), and pretrained weights expect that pairing")
CLOCKWISE = "each pair is turned the wrong way: x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1), not cat(x2, -x1)"
POSITIONS_IGNORED = "the rows were turned at 0, 1, 2, ... instead of the positions passed in: row t is turned by positions[t] x frequency"
NO_ROTARY = "no rotary embedding was applied: rotate q and k with apply_rope at the tokens' positions before attending"
WINDOW_IGNORED = "the sliding window was ignored: with sliding_window set, each query attends only its sliding_window most recent keys (sliding_window_mask)"
RESTARTED = ("the positions restarted at 0 in each call: with a cache, the new tokens are at positions len(cache), len(cache) + 1, ... "
             "(read len(cache) before cache.update), as GPT-2's position offset was in 02")
CACHED_UNROTATED = ("the keys were cached before rotation: rotate k at its positions first, then cache.update(k, v); cached keys are "
                    "rotated once, at their own position, and never again")
NEW_ONLY = "with a cache, the new queries must attend over everything cached (what cache.update returns), not only the new keys"
NOT_UPDATED = "the new keys and values were not appended to the cache: call cache.update(k, v) in forward when a cache is given"
TOP_LEFT_WINDOW = ("the window is aligned top-left: the Tq queries are the last Tq positions, so query i is at position i + (Tk - Tq) "
                   "and attends keys i + (Tk - Tq) - window < j <= i + (Tk - Tq)")
WIDER = "the window holds window + 1 keys (j >= i - window): a window of W is the query's own key and the W - 1 before it (j > i - W)"
NARROWER = "the window holds window - 1 keys: a window of W is the query's own key and the W - 1 before it (j > i - W, j <= i)"
NOT_CAUSAL = "the window reaches into the future: keys after the query's own position stay masked (j <= i + (Tk - Tq))"
PLAIN_CAUSAL = "the window was ignored: this is the causal mask; each query attends only its `window` most recent keys"
FULL_HISTORY = ("update returned every position seen so far: a sliding-window layer reads only the window (the last window - 1 "
                "positions before the new ones, then the new ones), and the cache keeps only window slots")
WINDOW_PLUS_ONE = ("update returned window old positions before the new ones, one too many: the first new query attends window keys "
                   "including its own, so return the last window - 1 positions seen before, then the new ones")
SLOT_ORDER = ("the keys came back in slot order: once the buffer wraps around, slot 0 no longer holds the oldest position. Return "
              "them in position order: slots p % window for p from the oldest to the newest")
READ_AFTER_WRITE = ("the old keys were read after the new ones were written: a chunk of new positions overwrites slots of old positions "
                    "that its first queries still attend. Read the old positions first, then write")
HELD_COUNT = ("len(cache) counts the positions held; it must count the positions seen, so that the next tokens' positions "
              "(rotary, GPT-2's position embedding) continue from there")
GROWS = ("the buffer grows with the context: a rolling cache keeps `window` slots (n_sink + window with sinks), position p in "
         "slot p % window, whatever the length: that is what keeps its memory flat")
SHIFTED = ("the buffer was kept in position order by shifting it (a copy of the whole window each step): write position p into "
           "slot p % window (after the sinks: n_sink + (p - n_sink) % window) and leave the other slots where they are")
EVICTED_SINKS = ("the first n_sink positions were evicted like the others: a sink cache keeps them for good (slots 0 .. n_sink - 1) "
                 "and rolls only the other window slots")
ODD = "an odd head size: rotary embeddings turn pairs of features"
UNEVEN = "6 query heads that 4 key/value heads cannot share equally"
POSITIONS_LENGTH = "positions of another length than the rows of x"


# ----------------------------------------------------------------------------------------------
# Rotary embeddings as a learner might write them (float64)
# ----------------------------------------------------------------------------------------------


def frequencies_variant(head_dim: int, theta: float, exponent: str = "2i", use_theta: bool = True, sign: int = -1) -> torch.Tensor:
    pairs = torch.arange(head_dim // 2, dtype=torch.float64)
    steps = 2 * pairs if exponent == "2i" else pairs
    return (theta if use_theta else HF_THETA) ** (sign * steps / head_dim)  # [d/2]


def rope_variant(x: torch.Tensor, positions: torch.Tensor, theta: float, pairing: str = "half", turn: int = 1,
                 use_positions: bool = True, **frequency_mistake) -> torch.Tensor:
    """x [..., T, d] rotated in float64: the contract's rotation, or a mistake's."""
    x = x.double().cpu()
    length, head_dim = x.shape[-2], x.shape[-1]
    at = positions.cpu().double() if use_positions else torch.arange(length, dtype=torch.float64)
    angles = at[:, None] * frequencies_variant(head_dim, theta, **frequency_mistake)[None, :]  # [T, d/2]
    cos, sin = angles.cos(), turn * angles.sin()
    if pairing == "half":
        first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]
        return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)  # pairs (2i, 2i+1)


ROPE_MISTAKES = {INTERLEAVED: {"pairing": "interleaved"}, SPLIT: {"exponent": "i"}, CLOCKWISE: {"turn": -1},
                 POSITIONS_IGNORED: {"use_positions": False}, THETA_IGNORED: {"use_theta": False}}


def _frequencies_expected(case) -> dict:
    if case["kind"] == "raises":
        return {"y": (RAISES, "ValueError", "an odd head_dim")}
    return {"y": frequencies_variant(case["head_dim"], case["theta"]).float()}


def _frequencies_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    head_dim, theta = case["head_dim"], case["theta"]
    found = {SPLIT: frequencies_variant(head_dim, theta, exponent="i"), RISING: frequencies_variant(head_dim, theta, sign=1),
             DOUBLED: frequencies_variant(head_dim, theta).repeat(2)}
    if theta != HF_THETA:
        found[THETA_IGNORED] = frequencies_variant(head_dim, theta, use_theta=False)
    return {"y": found}


def _describe_frequencies(case) -> str:
    return f"rope_frequencies({case['head_dim']}, theta={case['theta']:g})"


def _rope_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "raises":
        why = ODD if case["x"].shape[-1] % 2 else POSITIONS_LENGTH
        return {"y": (RAISES, "ValueError", why)}
    x = case["x"]
    return {"y": rope_variant(x, case["positions"], case["theta"]).to(device=x.device, dtype=x.dtype)}


def _rope_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    x, positions, theta = case["x"], case["positions"], case["theta"]
    found = {message: rope_variant(x, positions, theta, **mistake).to(x.device) for message, mistake in ROPE_MISTAKES.items()
             if not (mistake.get("use_theta") is False and theta == HF_THETA)}
    return {"y": found}


def _describe_rope(case) -> str:
    x, positions = case["x"], case["positions"]
    shown = positions.tolist() if positions.numel() <= 6 else f"[{positions[0].item()}, ..., {positions[-1].item()}]"
    call = f"apply_rope(x{shape(x)}, positions={shown}, theta={case['theta']:g})"
    if case["kind"] == "meta":
        return f"{call} [inputs on the meta device]"
    return call if case["kind"] == "raises" else f"{call} [{x.dtype}, {x.device}]"


# ----------------------------------------------------------------------------------------------
# sliding_window_mask
# ----------------------------------------------------------------------------------------------


def window_variant(n_queries: int, n_keys: int, window: int, align: str = "bottom_right", extra: int = 0,
                   causal: bool = True, use_window: bool = True) -> torch.Tensor:
    offset = n_keys - n_queries if align == "bottom_right" else 0
    query_pos = torch.arange(n_queries)[:, None] + offset  # [Tq, 1]
    key_pos = torch.arange(n_keys)[None, :]  # [1, Tk]
    inside = (key_pos > query_pos - window - extra) if use_window else torch.ones(n_queries, n_keys, dtype=torch.bool)
    if causal:
        return inside & (key_pos <= query_pos)
    return inside & (key_pos < query_pos + window)


WINDOW_MISTAKES = {TOP_LEFT_WINDOW: {"align": "top_left"}, WIDER: {"extra": 1}, NARROWER: {"extra": -1},
                   NOT_CAUSAL: {"causal": False}, PLAIN_CAUSAL: {"use_window": False}}


def _window_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "raises":
        n_queries, n_keys, window = case["size"]
        why = "more queries than keys" if n_queries > n_keys else f"window={window}"
        return {"mask": (RAISES, "ValueError", why)}
    return {"mask": window_variant(*case["size"])}


def _window_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    return {"mask": {message: window_variant(*case["size"], **mistake) for message, mistake in WINDOW_MISTAKES.items()}}


def _describe_window(case) -> str:
    n_queries, n_keys, window = case["size"]
    call = f"sliding_window_mask({n_queries}, {n_keys}, window={window})"
    return f"{call} [on the meta device]" if case["kind"] == "meta" else call


# ----------------------------------------------------------------------------------------------
# RotaryGQA
# ----------------------------------------------------------------------------------------------


def _linear(weights, name, t):
    bias = weights.get(f"{name}.bias")
    return t @ weights[f"{name}.weight"].double().T + (0 if bias is None else bias.double())


def _heads(t: torch.Tensor, n: int, head_dim: int) -> torch.Tensor:
    batch, length, _ = t.shape
    return t.view(batch, length, n, head_dim).transpose(1, 2)  # [B, n, T, d]


def rotated_keys(case, key_positions: torch.Tensor | None = None, **rope_mistake) -> torch.Tensor:
    """The keys of every position of x, rotated (at ``key_positions``, default 0 .. T-1), float64 [B, G, T, d];
    ``key_positions=False``: not rotated."""
    d_model, n_heads, n_kv = case["size"]
    x = case["x"].double()
    k = _heads(_linear(case["weights"], "k_proj", x), n_kv, d_model // n_heads)  # [B, G, T, d]
    if key_positions is False:
        return k
    at = torch.arange(x.shape[1]) if key_positions is None else key_positions
    return rope_variant(k, at, case["theta"], **rope_mistake)


def layer_variant(case, start: int, end: int, query_positions=None, key_positions=None, keys_from: int = 0,
                  use_window: bool = True, window_extra: int = 0, **rope_mistake) -> torch.Tensor:
    """The layer's output for x[:, start:end] with x[:, :start] cached, float64, as a learner might compute it:
    queries at ``query_positions`` (default start .. end-1), keys x[:, keys_from:end] rotated at ``key_positions``."""
    d_model, n_heads, n_kv = case["size"]
    head_dim = d_model // n_heads
    x, weights = case["x"].double(), case["weights"]
    at = torch.arange(start, end) if query_positions is None else query_positions
    q = rope_variant(_heads(_linear(weights, "q_proj", x[:, start:end]), n_heads, head_dim), at, case["theta"], **rope_mistake)
    k = rotated_keys(case, key_positions, **rope_mistake)[:, :, keys_from:end]
    v = _heads(_linear(weights, "v_proj", x), n_kv, head_dim)[:, :, keys_from:end]
    k, v = group_of_heads(k, n_heads), group_of_heads(v, n_heads)  # [B, H, T_k, d]
    window = case["window"] + window_extra if use_window and case["window"] else None
    n_queries, n_keys = end - start, end - keys_from
    allowed = causal_mask(n_queries, n_keys) if window is None else sliding_window_mask(n_queries, n_keys, window)
    scores = (q @ k.transpose(-2, -1) * head_dim**-0.5).masked_fill(~allowed, float("-inf"))  # [B, H, T_new, T_k]
    y = torch.softmax(scores, dim=-1) @ v  # [B, H, T_new, d]
    return _linear(weights, "o_proj", y.transpose(1, 2).reshape(x.shape[0], n_queries, n_heads * head_dim))


def _chunks(case):
    start = 0
    for n_new in case["chunks"]:
        yield start, start + n_new
        start += n_new


def _restarted_positions(case) -> torch.Tensor:
    """Each position as a layer that restarts at 0 in every call puts it: 0 .. n_new - 1 per chunk."""
    return torch.cat([torch.arange(end - start) for start, end in _chunks(case)])


def _whole_sequence(case) -> torch.Tensor:
    d_model, n_heads, n_kv = case["size"]
    if case["oracle"] == "hugging face":
        from attention_course.hf_compat import random_rotary_attention_layer, rotary_attention_layer_output

        layer, rotary = random_rotary_attention_layer(d_model, n_heads, n_kv, case["bias"], case["theta"], case["window"],
                                                      torch.Generator().manual_seed(0))
        layer.load_state_dict(case["weights"])  # strict: the contract's layout is Llama's
        with torch.no_grad():
            return rotary_attention_layer_output(layer, rotary, case["x"].double())
    return layer_variant(case, 0, case["x"].shape[1])


def _layer_expected(case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    if case["kind"] == "raises":
        return {"layer": (RAISES, "ValueError", UNEVEN if n_heads % n_kv else ODD)}
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "layout":
        return {"n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": d_model // n_heads}
    cast = {"device": case["device"], "dtype": case["dtype"]}
    whole = _whole_sequence(case).to(**cast)
    expected = {"y": whole}
    for _, end in _chunks(case):
        expected[f"cache length after x[:, :{end}]"] = end
    expected["the cached keys"] = rotated_keys(case).to(**cast)
    for start, end in _chunks(case):
        expected[f"x[:, {start}:{end}] after {start} cached"] = whole[:, start:end]
    return expected


def _layer_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    length = case["x"].shape[1]
    at_zero = torch.zeros(length, dtype=torch.long)  # every row turned by 0: no rotation at all
    whole_mistakes = {NO_ROTARY: {"query_positions": at_zero, "key_positions": at_zero},
                      INTERLEAVED: {"pairing": "interleaved"}, SPLIT: {"exponent": "i"}}
    if case["theta"] != HF_THETA:
        whole_mistakes[THETA_IGNORED] = {"use_theta": False}
    if case["window"] is not None:
        whole_mistakes[WINDOW_IGNORED] = {"use_window": False}
        whole_mistakes[WIDER] = {"window_extra": 1}
    found = {"y": {message: layer_variant(case, 0, length, **mistake) for message, mistake in whole_mistakes.items()}}
    for start, end in _chunks(case):
        found[f"cache length after x[:, :{end}]"] = {NOT_UPDATED: start}
    restarted = _restarted_positions(case)
    found["the cached keys"] = {CACHED_UNROTATED: rotated_keys(case, False), RESTARTED: rotated_keys(case, restarted),
                                INTERLEAVED: rotated_keys(case, pairing="interleaved")}
    for start, end in _chunks(case):
        chunk = {RESTARTED: layer_variant(case, start, end, query_positions=restarted[start:end], key_positions=restarted)}
        if start:
            chunk[NEW_ONLY] = layer_variant(case, start, end, keys_from=start)
        found[f"x[:, {start}:{end}] after {start} cached"] = chunk
    return found


def _describe_layer(case) -> str:
    d_model, n_heads, n_kv = case["size"]
    window = "" if case["window"] is None else f", sliding_window={case['window']}"
    name = f"RotaryGQA({d_model}, {n_heads}, {n_kv}, rope_theta={case['theta']:g}{window}, bias={case['bias']})"
    if case["kind"] in ("raises", "layout"):
        return name
    if case["kind"] == "meta":
        return f"{name} on x[2, {case['x'].shape[1]}, {d_model}], then a prefill and a step [inputs on the meta device]"
    oracle = ""
    if case["oracle"] == "hugging face":
        oracle = " vs Hugging Face's " + ("MistralAttention" if case["window"] else "LlamaAttention")
    return f"{name} on x{shape(case['x'])}, Llama's weights{oracle} [{case['dtype']}, {case['device']}]"


# ----------------------------------------------------------------------------------------------
# RollingKVCache, SinkKVCache
# ----------------------------------------------------------------------------------------------


def returned_positions(n_sink: int, window: int, start: int, end: int, extra_old: int = 0) -> list[int]:
    """The positions ``update`` returns when start were seen and start .. end - 1 are new: the sinks seen, the last
    window - 1 (+ ``extra_old``) later ones seen before, then the new ones."""
    sinks = list(range(min(start, n_sink)))
    return sinks + list(range(max(n_sink, start - (window - 1) - extra_old), start)) + list(range(start, end))


def _after_write(n_sink: int, window: int, end: int) -> dict[int, int]:
    """slot -> the position it holds after ``end`` positions."""
    return {slot: position for position, slot in kernel.held_slots(n_sink, window, end)}


def _slot(n_sink: int, window: int, position: int) -> int:
    return position if position < n_sink else n_sink + (position - n_sink) % window


def _cache_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "raises":
        return {"update(keys of 2 positions, values of 1)": (RAISES, "ValueError", "keys and values of different shapes")}
    n_sink, window, keys, values = case["n_sink"], case["window"], case["keys"], case["values"]
    expected = {}
    for start, end in _chunks(case):
        label = f"update of positions {start}..{end - 1}"
        returned = returned_positions(n_sink, window, start, end)
        expected[f"{label}: keys"], expected[f"{label}: values"] = keys[:, :, returned], values[:, :, returned]
        expected[f"len(cache) after {label}"] = end
        expected[f"slots in the buffer after {label}"] = n_sink + window
        held = [position for position, _ in kernel.held_slots(n_sink, window, end)]
        expected[f"the slots after {label}"] = keys[:, :, held]
    return expected


def _cache_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    n_sink, window, keys = case["n_sink"], case["window"], case["keys"]
    found = {}
    for start, end in _chunks(case):
        label = f"update of positions {start}..{end - 1}"
        after = _after_write(n_sink, window, end)
        old = returned_positions(n_sink, window, start, start)
        by_slot = [after[slot] for slot in sorted(after)]
        # One too many before everything seen: where the two coincide (start = window), that is what was returned.
        candidates = {WINDOW_PLUS_ONE: returned_positions(n_sink, window, start, end, extra_old=1), FULL_HISTORY: list(range(end)),
                      SLOT_ORDER: by_slot,
                      READ_AFTER_WRITE: [after.get(_slot(n_sink, window, p), p) for p in old] + list(range(start, end))}
        if n_sink:
            candidates[EVICTED_SINKS] = returned_positions(0, n_sink + window, start, end)
        expected = returned_positions(n_sink, window, start, end)
        found[f"{label}: keys"] = {message: keys[:, :, positions] for message, positions in candidates.items() if positions != expected}
        found[f"len(cache) after {label}"] = {HELD_COUNT: min(end, n_sink + window)}
        found[f"slots in the buffer after {label}"] = {GROWS: end}
        held = kernel.held_slots(n_sink, window, end)
        ordered = sorted(position for position, _ in held)
        shifted = [ordered[slot] for _, slot in held]  # a buffer in position order: slot i holds the i-th oldest position
        if shifted != [position for position, _ in held]:
            found[f"the slots after {label}"] = {SHIFTED: keys[:, :, shifted]}
    return found


def describe_cache(sinks: bool):
    def describe(case) -> str:
        batch, n_kv, head_dim = case["size"]
        if sinks:
            name = f"SinkKVCache({batch}, {n_kv}, {head_dim}, n_sink={case['n_sink']}, window={case['window']})"
        else:
            name = f"RollingKVCache({batch}, {n_kv}, {head_dim}, window={case['window']})"
        if case["kind"] == "meta":
            return f"{name} and an update [on the meta device]"
        if case["kind"] == "raises":
            return name
        return f"{name} fed {' + '.join(map(str, case['chunks']))} positions [{case['dtype']}]"
    return describe


ROPE_FREQUENCIES = Exercise("test_rope_frequencies", "rope_frequencies", kernel.rope_frequencies_cases, kernel.run_rope_frequencies,
                            _frequencies_expected, _describe_frequencies, _frequencies_mistakes)
APPLY_ROPE = Exercise("test_apply_rope", "apply_rope", kernel.apply_rope_cases, kernel.run_apply_rope, _rope_expected, _describe_rope,
                      _rope_mistakes)
WINDOW_MASK = Exercise("test_window_mask", "sliding_window_mask", kernel.window_mask_cases, kernel.run_window_mask, _window_expected,
                       _describe_window, _window_mistakes)
ROTARY_GQA = Exercise("test_module", "RotaryGQA", kernel.rotary_layer_cases, kernel.run_rotary_layer, _layer_expected,
                      _describe_layer, _layer_mistakes, layout_problem)
ROLLING_CACHE = Exercise("test_rolling_cache", "RollingKVCache", kernel.rolling_cache_cases, kernel.run_rolling_cache,
                         _cache_expected, describe_cache(False), _cache_mistakes)
SINK_CACHE = Exercise("test_sink_cache", "SinkKVCache", kernel.sink_cache_cases, kernel.run_sink_cache, _cache_expected,
                      describe_cache(True), _cache_mistakes)
EXERCISES = (ROPE_FREQUENCIES, APPLY_ROPE, WINDOW_MASK, ROTARY_GQA, ROLLING_CACHE, SINK_CACHE)
