"""Out-of-process verdicts of 04_gqa; 03_mqa's are the same with one key/value head."""

import torch

from attention_course.grading.verdicts import Exercise, integer, raised, randn, shape
from attention_course.kernels import gqa as ref
from attention_course.kernels.kv_cache import KVCache



def _heads(generator, n_kv_heads: int | None) -> tuple[int, int]:
    """(H, G): H a multiple of G, with G >= 2 and H / G >= 2 (where pairing query heads with the
    wrong group shows) unless G is given."""
    n_kv = n_kv_heads or integer(generator, 2, 3)
    return n_kv * integer(generator, 2, 4), n_kv


def attention_cases(n_kv_heads: int | None):
    def cases(generator):
        drawn = []
        for causal in (True, True, False):
            n_heads, n_kv = _heads(generator, n_kv_heads)
            batch, n_queries, head_dim = integer(generator, 1, 3), integer(generator, 2, 5), integer(generator, 2, 8)
            n_keys = n_queries + integer(generator, 1 if causal else 0, 6)
            drawn.append({"q": randn(generator, batch, n_heads, n_queries, head_dim),
                          "k": randn(generator, batch, n_kv, n_keys, head_dim),
                          "v": randn(generator, batch, n_kv, n_keys, head_dim), "causal": causal})
        return drawn
    return cases


def attention_exercise(grade_id: str, name: str, n_kv_heads: int | None, cases=None, judge=None, run=None) -> Exercise:
    return Exercise(
        grade_id, (name,), cases or attention_cases(n_kv_heads),
        run=run or (lambda s, c: {"y": raised(getattr(s, name), c["q"], c["k"], c["v"], causal=c["causal"])}),
        expected=lambda c: {"y": raised(lambda: ref.gqa_attention(c["q"].double(), c["k"].double(), c["v"].double(),
                                                                   causal=c["causal"]).float())},
        describe=lambda c: f"{name}(q{shape(c['q'])}, k{shape(c['k'])}, v{shape(c['v'])}, causal={c['causal']})",
        judge=judge)


def _gqa_cases(generator):
    cases = attention_cases(None)(generator)
    for n_kv_heads in (1, 4):  # MQA, and MHA
        cases += attention_cases(n_kv_heads)(generator)[:1]
    q = randn(generator, 1, 6, 3, 4)  # H = 6 query heads cannot share 4 key/value heads evenly
    cases.append({"q": q, "k": randn(generator, 1, 4, 3, 4), "v": randn(generator, 1, 4, 3, 4), "causal": True})
    return cases


def layer_cases(n_kv_heads: int | None):
    def cases(generator):
        drawn = []
        for bias in (False, True):
            n_heads, n_kv = _heads(generator, n_kv_heads)
            head_dim = integer(generator, 2, 6)
            d_model, length = n_heads * head_dim, integer(generator, 2, 7)
            layer = ref.GroupedQueryAttention(d_model, n_heads, n_kv, bias=bias)
            weights = {key: randn(generator, *t.shape, scale=d_model**-0.5) for key, t in layer.state_dict().items()}
            prefill = integer(generator, 1, length - 1)
            drawn.append({"size": (d_model, n_heads, n_kv), "bias": bias, "weights": weights,
                          "x": randn(generator, integer(generator, 1, 2), length, d_model), "chunks": [prefill, length - prefill]})
        return drawn
    return cases


def run_layer(construct):
    """Build the student's layer with the case's weights; its output on x, whole and in cached chunks."""
    def run(student, case):
        d_model, n_heads, n_kv = case["size"]
        layer = construct(student, case)
        layer.load_state_dict(case["weights"])
        outputs = {"n_heads": layer.n_heads, "n_kv_heads": layer.n_kv_heads, "head_dim": layer.head_dim}
        with torch.no_grad():
            outputs["y"] = layer(case["x"])
            cache, start = KVCache(case["x"].shape[0], n_kv, d_model // n_heads, case["x"].shape[1]), 0
            for step, n in enumerate(case["chunks"]):
                outputs[f"y cached {step}"] = layer(case["x"][:, start : start + n], cache)
                start += n
        return outputs
    return run


def expected_layer(case):
    d_model, n_heads, n_kv = case["size"]
    layer = ref.GroupedQueryAttention(d_model, n_heads, n_kv, bias=case["bias"]).double()
    layer.load_state_dict({key: t.double() for key, t in case["weights"].items()})
    with torch.no_grad():
        whole = layer(case["x"].double()).float()
    expected, start = {"n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": d_model // n_heads, "y": whole}, 0
    for step, n in enumerate(case["chunks"]):
        expected[f"y cached {step}"] = whole[:, start : start + n]
        start += n
    return expected


def params_cases(generator):
    cases = []
    for bias in (False, True, False, True):
        n_heads, n_kv = _heads(generator, None)
        cases.append({"args": (n_heads * 8 * integer(generator, 1, 16), n_heads, n_kv), "bias": bias})
    return cases


PARAMS = Exercise("test_params", ("kv_projection_params",), params_cases,
                  run=lambda s, c: {"params": s.kv_projection_params(*c["args"], bias=c["bias"])},
                  expected=lambda c: {"params": ref.kv_projection_params(*c["args"], bias=c["bias"])},
                  describe=lambda c: f"kv_projection_params{c['args']} with bias={c['bias']}")


def _repeat_cases(generator):
    """Two groups or more, repeated twice or more (where repeat and repeat_interleave differ), then n_rep = 1."""
    return [{"x": randn(generator, integer(generator, 1, 2), integer(generator, 2, 4), integer(generator, 1, 5), integer(generator, 1, 4)),
             "n_rep": n_rep} for n_rep in (integer(generator, 2, 4), integer(generator, 2, 4), 1)]


def _convert_cases(generator):
    cases = []
    for bias in (True, False):
        n_heads, n_kv = _heads(generator, None)
        head_dim = integer(generator, 2, 5)
        layer = ref.GroupedQueryAttention(n_heads * head_dim, n_heads, n_heads, bias=bias)
        cases.append({"size": (n_heads * head_dim, n_heads, n_kv), "bias": bias,
                      "weights": {key: randn(generator, *t.shape) for key, t in layer.state_dict().items()}})
    return cases


def _mha(case) -> ref.GroupedQueryAttention:
    d_model, n_heads, _ = case["size"]
    layer = ref.GroupedQueryAttention(d_model, n_heads, n_heads, bias=case["bias"]).double()
    layer.load_state_dict({key: t.double() for key, t in case["weights"].items()})
    return layer


def _run_convert(student, case):
    mha = _mha(case)
    converted = student.mha_to_gqa(mha, case["size"][2])
    outputs = {f"{key}": t for key, t in converted.state_dict().items()}
    unchanged = all(torch.equal(t, case["weights"][key].double()) for key, t in mha.state_dict().items())
    return outputs | {"n_kv_heads": converted.n_kv_heads, "the MHA layer left unchanged": unchanged}


def _expected_convert(case):
    converted = ref.mha_to_gqa(_mha(case), case["size"][2])
    return dict(converted.state_dict()) | {"n_kv_heads": case["size"][2], "the MHA layer left unchanged": True}


EXERCISES = (
    Exercise("test_repeat_kv", ("repeat_kv",), _repeat_cases,
             run=lambda s, c: {"y": s.repeat_kv(c["x"], c["n_rep"])},
             expected=lambda c: {"y": ref.repeat_kv(c["x"], c["n_rep"])},
             describe=lambda c: f"repeat_kv(x{shape(c['x'])}, {c['n_rep']})"),
    attention_exercise("test_gqa_attention", "gqa_attention", None, cases=_gqa_cases),
    Exercise("test_module", ("GroupedQueryAttention",), layer_cases(None),
             run_layer(lambda s, c: s.GroupedQueryAttention(*c["size"], bias=c["bias"])), expected_layer,
             describe=lambda c: f"GroupedQueryAttention{c['size']} (bias={c['bias']}) on x{shape(c['x'])}, "
                                f"then cached in chunks of {c['chunks']}"),
    Exercise("test_convert", ("mha_to_gqa",), _convert_cases, _run_convert, _expected_convert,
             describe=lambda c: f"mha_to_gqa(MHA layer {c['size'][:2]} (bias={c['bias']}), {c['size'][2]})",
             harness=(_mha,)),
)
