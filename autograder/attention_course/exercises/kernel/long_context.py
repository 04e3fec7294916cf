"""06_long_context, kernel half: how each exercise's inputs are drawn and the student's code is called
(the reference half: ``exercises/long_context.py``). Thorough cases add shapes drawn from the seed,
float16 / bfloat16 throughout, and longer runs of cache updates. The caches are fed keys and values
drawn at random, chunk by chunk: what each ``update`` returned, ``len(cache)`` and the slot each
position was written into are measured here, after every update."""

import torch

from attention_course.exercises.kernel.causal_attention import DEVICE, _visible_extras
from attention_course.exercises.kernel.devices import device_problem
from attention_course.exercises.kernel.draw import devices, dtypes, integer, raised, randn
from attention_course.exercises.kernel.gqa import layer_layout, llama_shapes
from attention_course.kernels.kv_cache import KVCache

LAYER_LENGTH, CHUNKS = 7, (3, 2, 1, 1)  # x [2, 7, D]: a prefill of 3, a chunk of 2, then single tokens


# ----------------------------------------------------------------------------------------------
# rope_frequencies, apply_rope
# ----------------------------------------------------------------------------------------------


def rope_frequencies_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    sizes = [(8, 10000.0), (64, 10000.0), (16, 500.0), (2, 10000.0)]  # (head_dim, theta)
    if thorough:
        sizes += [(128, 500000.0), (128, 10000.0), (96, 1e6), (6, 100.0)]
        sizes += [(2 * integer(generator, 1, 40), float(10 ** integer(generator, 2, 6))) for _ in range(2)]
    cases = [{"kind": "values", "head_dim": head_dim, "theta": theta} for head_dim, theta in sizes]
    return cases + [{"kind": "raises", "head_dim": 7, "theta": 10000.0}]


def run_rope_frequencies(student, case) -> dict:
    if case["kind"] == "raises":
        return {"y": raised(student.rope_frequencies, case["head_dim"], case["theta"])}
    return {"y": student.rope_frequencies(case["head_dim"], case["theta"])}


def apply_rope_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """x [..., T, d] with positions that start past 0 (and, once, in no order), in every dtype under test."""
    shapes = [((2, 3), 5, 8, 10000.0), ((1,), 4, 16, 500.0), ((), 6, 4, 10000.0), ((2, 2), 3, 32, 1e6)]  # (lead, T, d, theta)
    if thorough:
        shapes += [((3, 4), 9, 64, 10000.0), ((1, 2, 2), 1, 8, 100.0), ((2,), 12, 128, 500000.0)]
        shapes += [((integer(generator, 1, 3),), integer(generator, 1, 8), 2 * integer(generator, 1, 16), 10000.0)]
    runs = [(device, dtype, shape) for device in devices(thorough) for dtype in dtypes(thorough) for shape in shapes]
    runs += [(device, dtype, shapes[0]) for device, dtype in _visible_extras(thorough)]
    cases = []
    for index, (device, dtype, (lead, length, head_dim, theta)) in enumerate(runs):
        start = integer(generator, 1, 30)
        positions = torch.arange(start, start + length)
        if index == 1:  # positions in no particular order: each row is turned by its own position
            positions = positions[torch.randperm(length, generator=generator)]
        x = randn(generator, *lead, length, head_dim).to(device=device, dtype=dtype)
        cases.append({"kind": "values", "x": x, "positions": positions.to(device), "theta": theta})
    cases.append({"kind": "raises", "x": randn(generator, 2, 5, 8).float(), "positions": torch.arange(4), "theta": 10000.0})
    cases.append({"kind": "raises", "x": randn(generator, 2, 3, 7).float(), "positions": torch.arange(3), "theta": 10000.0})
    return cases + [{"kind": "meta", "x": torch.zeros(2, 4, 8), "positions": torch.arange(3, 7), "theta": 10000.0}]


def run_apply_rope(student, case) -> dict:
    x, positions, theta = case["x"], case["positions"], case["theta"]
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.apply_rope, x, positions, theta)}
    if case["kind"] == "raises":
        return {"y": raised(student.apply_rope, x, positions, theta)}
    return {"y": student.apply_rope(x, positions, theta)}


# ----------------------------------------------------------------------------------------------
# sliding_window_mask
# ----------------------------------------------------------------------------------------------


def window_mask_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    sizes = [(6, 6, 3), (3, 8, 3), (1, 6, 4), (4, 4, 9), (5, 5, 1)]  # (Tq, Tk, window)
    if thorough:
        sizes += [(9, 9, 4), (2, 11, 5), (16, 16, 16), (5, 12, 2), (1, 1, 1)]
        for _ in range(3):
            n_queries = integer(generator, 1, 10)
            sizes.append((n_queries, n_queries + integer(generator, 0, 8), integer(generator, 1, 8)))
    cases = [{"kind": "values", "size": size} for size in sizes]
    cases += [{"kind": "raises", "size": (4, 3, 2)}, {"kind": "raises", "size": (3, 5, 0)}]
    return cases + [{"kind": "meta", "size": (3, 5, 2)}]


def run_window_mask(student, case) -> dict:
    if case["kind"] == "raises":
        return {"mask": raised(student.sliding_window_mask, *case["size"])}
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.sliding_window_mask, *case["size"], device="meta")}
    return {"mask": student.sliding_window_mask(*case["size"])}


# ----------------------------------------------------------------------------------------------
# RotaryGQA
# ----------------------------------------------------------------------------------------------


def _layer_configs(generator: torch.Generator, thorough: bool) -> list[tuple]:
    """(D, H, G, bias, rope_theta, sliding_window); windows without biases (Mistral has none)."""
    configs = [(32, 4, 2, False, 10000.0, None), (48, 6, 3, True, 500.0, None), (32, 4, 2, False, 10000.0, 3),
               (32, 8, 1, False, 100.0, None)]
    if thorough:
        configs += [(64, 8, 2, True, 1e6, None), (48, 6, 6, False, 10000.0, 2), (64, 16, 4, False, 500000.0, 5),
                    (32, 4, 4, True, 10000.0, None)]
        n_kv = integer(generator, 1, 3)
        n_heads = n_kv * integer(generator, 1, 3)
        configs.append((n_heads * 2 * integer(generator, 1, 4), n_heads, n_kv, False, 10000.0, integer(generator, 1, 6)))
    return configs


def rotary_layer_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """Per layer: its layout, then Llama-layout weights and x [2, 7, D] run whole and in cached chunks through a
    KVCache in every dtype under test (against Hugging Face in thorough cases), then the meta-device case."""
    cases = []
    for index, (d_model, n_heads, n_kv, bias, theta, window) in enumerate(_layer_configs(generator, thorough)):
        size = {"size": (d_model, n_heads, n_kv), "bias": bias, "theta": theta, "window": window}
        weights = {key: randn(generator, *dims, scale=d_model**-0.5) for key, dims in llama_shapes(d_model, n_heads, n_kv, bias).items()}
        x = randn(generator, 2, LAYER_LENGTH, d_model)
        runs = [(device, dtype) for device in devices(thorough) for dtype in dtypes(thorough)]
        runs += _visible_extras(thorough) if index == 0 else []
        cases.append({"kind": "layout", **size})
        cases += [{"kind": "values", **size, "weights": weights, "x": x, "device": device, "dtype": dtype, "chunks": CHUNKS,
                   "oracle": "hugging face" if thorough else "reference"} for device, dtype in runs]
        cases.append({"kind": "meta", **size, "x": torch.zeros(2, LAYER_LENGTH, d_model)})
    common = {"bias": False, "theta": 10000.0, "window": None}
    return cases + [{"kind": "raises", "size": (24, 6, 4), **common}, {"kind": "raises", "size": (30, 6, 3), **common}]


def _build_layer(student, case):
    d_model, n_heads, n_kv = case["size"]
    return student.RotaryGQA(d_model, n_heads, n_kv, rope_theta=case["theta"], sliding_window=case["window"], bias=case["bias"])


def _prefill_and_step(layer, x, cache) -> list:
    return [layer(x), layer(x[:, :3], cache=cache), layer(x[:, 3:4], cache=cache)]


def run_rotary_layer(student, case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    if case["kind"] == "raises":
        return {"layer": raised(_build_layer, student, case)}
    layer = _build_layer(student, case)
    head_dim = d_model // n_heads
    if case["kind"] == "layout":
        return layer_layout(layer)
    if case["kind"] == "meta":
        cache = KVCache(2, n_kv, head_dim, LAYER_LENGTH, device="meta")
        return {DEVICE: device_problem(_prefill_and_step, layer, case["x"], cache)}
    layer.load_state_dict(case["weights"])
    layer = layer.to(device=case["device"], dtype=case["dtype"]).eval()
    x = case["x"].to(device=case["device"], dtype=case["dtype"])
    outputs = {}
    with torch.no_grad():
        outputs["y"] = layer(x)
        cache, start = KVCache(x.shape[0], n_kv, head_dim, x.shape[1], dtype=case["dtype"], device=case["device"]), 0
        for n_new in case["chunks"]:
            end = start + n_new
            outputs[f"x[:, {start}:{end}] after {start} cached"] = layer(x[:, start:end], cache=cache)
            outputs[f"cache length after x[:, :{end}]"] = len(cache)
            start = end
        outputs["the cached keys"] = cache.keys[:, :, :len(cache)].clone()
    return outputs


# ----------------------------------------------------------------------------------------------
# RollingKVCache, SinkKVCache
# ----------------------------------------------------------------------------------------------


def _cache_cases(generator: torch.Generator, thorough: bool, sinks: bool) -> list[dict]:
    """(B, G, d, n_sink, window, chunks) fed with random keys and values in each dtype under test."""
    # The first run's prefill is longer than the window: there, returning everything seen and one position too many differ.
    runs = [(2, 1, 8, 1, 4, (5, 1, 1, 6, 1)), (1, 2, 4, 2, 3, (1,) * 9), (1, 3, 2, 3, 1, (2, 1, 1, 4)),
            (2, 2, 4, 2, 5, (3, 3, 3, 1, 1))]
    if thorough:
        runs += [(1, 2, 8, 4, 6, (1,) * 20), (2, 3, 4, 1, 2, (7, 1, 5, 1, 1)), (1, 1, 16, 2, 8, (12, 1, 1, 9))]
        runs.append((integer(generator, 1, 2), integer(generator, 1, 3), 4, integer(generator, 1, 4), integer(generator, 1, 7),
                     tuple(integer(generator, 1, 5) for _ in range(6))))
    if not sinks:
        runs = [(b, g, d, 0, w, chunks) for b, g, d, _, w, chunks in runs]
    cases = []
    for dtype in dtypes(thorough):
        for batch, n_kv, head_dim, n_sink, window, chunks in runs:
            total = sum(chunks)
            keys, values = randn(generator, batch, n_kv, total, head_dim), randn(generator, batch, n_kv, total, head_dim)
            cases.append({"kind": "values", "size": (batch, n_kv, head_dim), "n_sink": n_sink, "window": window, "chunks": chunks,
                          "keys": keys.to(dtype), "values": values.to(dtype), "dtype": dtype})
    cases.append({"kind": "raises", "size": (1, 2, 4), "n_sink": 1 if sinks else 0, "window": 3, "dtype": torch.float32})
    return cases + [{"kind": "meta", "size": (1, 2, 4), "n_sink": 1 if sinks else 0, "window": 3, "dtype": torch.float32}]


def rolling_cache_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return _cache_cases(generator, thorough, sinks=False)


def sink_cache_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return _cache_cases(generator, thorough, sinks=True)


def held_slots(n_sink: int, window: int, end: int) -> list[tuple[int, int]]:
    """(position, slot) of every position a cache with these sinks and window holds after ``end`` positions."""
    sinks = [(p, p) for p in range(min(n_sink, end))]
    recent = range(max(n_sink, end - window), end)
    return sinks + [(p, n_sink + (p - n_sink) % window) for p in recent]


def _new_cache(student, case, sinks: bool, device=None):
    batch, n_kv, head_dim = case["size"]
    if sinks:
        return student.SinkKVCache(batch, n_kv, head_dim, case["n_sink"], case["window"], dtype=case["dtype"], device=device)
    return student.RollingKVCache(batch, n_kv, head_dim, case["window"], dtype=case["dtype"], device=device)


def _run_cache(student, case, sinks: bool) -> dict:
    batch, n_kv, head_dim = case["size"]
    if case["kind"] == "raises":
        k, v = torch.zeros(batch, n_kv, 2, head_dim), torch.zeros(batch, n_kv, 1, head_dim)
        return {"update(keys of 2 positions, values of 1)": raised(lambda: _new_cache(student, case, sinks).update(k, v))}
    if case["kind"] == "meta":
        k = torch.zeros(batch, n_kv, 2, head_dim)
        return {DEVICE: device_problem(lambda k, v: _new_cache(student, case, sinks, device="meta").update(k, v), k, k)}
    cache, start, outputs = _new_cache(student, case, sinks), 0, {}
    for n_new in case["chunks"]:
        end = start + n_new
        k_all, v_all = cache.update(case["keys"][:, :, start:end], case["values"][:, :, start:end])
        label = f"update of positions {start}..{end - 1}"
        # Copies: a correct update may return views of its buffer, which later updates overwrite.
        outputs[f"{label}: keys"], outputs[f"{label}: values"] = (t.clone() if isinstance(t, torch.Tensor) else t for t in (k_all, v_all))
        outputs[f"len(cache) after {label}"] = len(cache)
        buffer = getattr(cache, "keys", None)  # the contract's [B, G, slots, d] buffer
        outputs[f"slots in the buffer after {label}"] = buffer.shape[2] if isinstance(buffer, torch.Tensor) and buffer.dim() == 4 else None
        if isinstance(buffer, torch.Tensor) and buffer.dim() == 4:
            slots = [slot for _, slot in held_slots(case["n_sink"], case["window"], end)]
            if slots and max(slots) < buffer.shape[2]:
                outputs[f"the slots after {label}"] = buffer[:, :, slots].clone()  # [B, G, held, d]
        start = end
    return outputs


def run_rolling_cache(student, case) -> dict:
    return _run_cache(student, case, sinks=False)


def run_sink_cache(student, case) -> dict:
    return _run_cache(student, case, sinks=True)
