"""Out-of-process verdicts of 02_kv_cache."""

import torch

from attention_course.checks.kv_cache import Recorder, reference_model
from attention_course.grading.verdicts import RAISES, Exercise, integer, raised, randn, shape
from attention_course.grading.verdicts.causal_attention import gpt2_weights
from attention_course.kernels import causal as causal_ref
from attention_course.kernels import kv_cache as ref


def _chunks(generator, total: int) -> list[int]:
    """Sizes of a prefill shorter than ``total`` and the chunks after it (some of one token)."""
    sizes = [integer(generator, 1, min(4, total - 1))]
    while sum(sizes) < total:
        sizes.append(min(integer(generator, 1, 3), total - sum(sizes)))
    return sizes


def _cache_cases(generator):
    cases = []
    for _ in range(2):
        batch, heads, head_dim, max_len = integer(generator, 1, 3), integer(generator, 1, 4), integer(generator, 1, 6), integer(generator, 3, 9)
        chunks = [(randn(generator, batch, heads, n, head_dim), randn(generator, batch, heads, n, head_dim))
                  for n in _chunks(generator, max_len)]
        cases.append({"size": (batch, heads, head_dim, max_len), "chunks": chunks,
                      "overflow": (randn(generator, batch, heads, 1, head_dim), randn(generator, batch, heads, 1, head_dim))})
    return cases


def _run_cache(student, case):
    cache = student.KVCache(*case["size"])
    outputs = {}
    for step, (k, v) in enumerate(case["chunks"]):
        keys, values = cache.update(k, v)
        outputs |= {f"keys {step}": keys.clone(), f"values {step}": values.clone(), f"len {step}": len(cache)}
    outputs["a full cache"] = raised(cache.update, *case["overflow"])
    return outputs


def _expected_cache(case):
    expected, seen = {}, 0
    for step, _ in enumerate(case["chunks"]):
        seen += case["chunks"][step][0].shape[2]
        expected[f"keys {step}"] = torch.cat([k for k, _ in case["chunks"][: step + 1]], dim=2)
        expected[f"values {step}"] = torch.cat([v for _, v in case["chunks"][: step + 1]], dim=2)
        expected[f"len {step}"] = seen
    expected["a full cache"] = (RAISES, "ValueError")
    return expected


def _attention_cases(generator):
    cases = []
    for _ in range(2):
        heads, head_dim = integer(generator, 1, 4), integer(generator, 2, 8)
        width, batch, length = heads * head_dim, integer(generator, 1, 2), integer(generator, 3, 8)
        cases.append({"x": randn(generator, batch, length, width), "weights": gpt2_weights(generator, width), "n_heads": heads,
                      "chunks": _chunks(generator, length)})
    return cases


def _run_cached_attention(student, case):
    x, n_heads = case["x"], case["n_heads"]
    cache = ref.KVCache(x.shape[0], n_heads, x.shape[2] // n_heads, x.shape[1])  # the cache is 02's other exercise
    outputs, start = {}, 0
    for step, n in enumerate(case["chunks"]):
        outputs[f"y {step}"] = student.cached_gpt2_attention(x[:, start : start + n], *case["weights"], n_heads, cache)
        start += n
    return outputs


def _expected_cached_attention(case):
    whole = causal_ref.gpt2_attention(case["x"].double(), *(w.double() for w in case["weights"]), case["n_heads"]).float()
    expected, start = {}, 0
    for step, n in enumerate(case["chunks"]):
        expected[f"y {step}"] = whole[:, start : start + n]
        start += n
    return expected


def _generate_cases(generator):
    cases = []
    for use_cache in (True, False, True):
        batch, length, n_new = integer(generator, 1, 2), integer(generator, 1, 8), integer(generator, 2, 9)
        prompt = torch.randint(0, reference_model()[0].config.vocab_size, (batch, length), generator=generator)
        cases.append({"prompt": prompt, "n_new": n_new, "use_cache": use_cache})
    return cases


def _run_generate(student, case):
    """The notebook's decoder over the in-notebook check's small random GPT-2, noting each call."""
    model = Recorder(reference_model()[1])
    tokens = student.greedy_generate(model, case["prompt"], case["n_new"], use_cache=case["use_cache"])
    calls = [(n_new, int(cached)) for n_new, cached in model.calls]
    return {"tokens": tokens, "calls": torch.tensor(calls, dtype=torch.int64).reshape(-1, 2)}


def _expected_generate(case):
    from attention_course.gpt2_forward import hf_greedy

    return {"tokens": hf_greedy(reference_model()[0], case["prompt"], case["n_new"], use_cache=case["use_cache"])}


def _judge_generate(case, outputs) -> str:
    calls = outputs.get("calls")
    if not isinstance(calls, torch.Tensor) or calls.dim() != 2:
        return "the model's calls did not come back"
    fed, cached = int(calls[:, 0].sum()), calls[:, 1].bool()
    length = case["prompt"].shape[1]
    if case["use_cache"] and (not bool(cached.all()) or fed > length + case["n_new"]):
        return f"with use_cache=True the model was fed {fed} tokens (or called without its caches); the cache was not used"
    if not case["use_cache"] and bool(cached.any()):
        return "with use_cache=False the model was given caches"
    return ""


def _bytes_cases(generator):
    return [{"args": (integer(generator, 1, 8), integer(generator, 1, 96), integer(generator, 1, 64), integer(generator, 16, 256),
                      integer(generator, 1, 9000), (1, 2, 4)[integer(generator, 0, 2)])} for _ in range(5)]


EXERCISES = (
    Exercise("test_kv_cache", ("KVCache",), _cache_cases, _run_cache, _expected_cache,
             describe=lambda c: f"KVCache{c['size']}, updates of {[k.shape[2] for k, _ in c['chunks']]} positions"),
    Exercise("test_cached_attention", ("cached_gpt2_attention",), _attention_cases, _run_cached_attention,
             _expected_cached_attention,
             describe=lambda c: f"cached_gpt2_attention on x{shape(c['x'])} in chunks of {c['chunks']}",
             allowed=(ref.KVCache,)),
    Exercise("test_generate", ("greedy_generate",), _generate_cases, _run_generate, _expected_generate,
             describe=lambda c: f"greedy_generate(model, input_ids{shape(c['prompt'])}, {c['n_new']}, use_cache={c['use_cache']})",
             judge=_judge_generate, harness=(Recorder, reference_model)),
    Exercise("test_bytes", ("kv_cache_bytes",), _bytes_cases,
             run=lambda s, c: {"bytes": s.kv_cache_bytes(*c["args"])},
             expected=lambda c: {"bytes": ref.kv_cache_bytes(*c["args"])},
             describe=lambda c: f"kv_cache_bytes{c['args']}"),
)
