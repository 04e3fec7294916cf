"""A class for the integrity report, on 01_causal_attention and 02_kv_cache: honest students who
wrote their own code (some with the same short function), copies of the reference (variables
renamed, comments changed, helpers reordered, or a few lines edited: the example class's students
built from the solution), two students sharing one solution, and the untouched release.

Each student has an origin: whose code it is. Two submissions of one origin are a copy (the
ground truth of precision and recall); the references' origin is "reference"."""

import copy
import re
from dataclasses import dataclass

import nbformat

from attention_course.grading.cells import grade_id, is_solution_cell, solution_code
from attention_course.grading.examples import build_submission, students_of
from course_copy import ROOT

ASSIGNMENTS = {"01_causal_attention": "causal_attention.ipynb", "02_kv_cache": "kv_cache.ipynb"}
REFERENCE = "reference"


@dataclass(frozen=True)
class Written:
    name: str
    origin: str
    answers: dict  # grade id -> code; the cells not named keep the release's stub
    added: tuple[str, ...] = ()  # code cells the student added at the end


def rename(code: str, names: dict[str, str]) -> str:
    """What a copier does first: other names for the variables (not for attributes)."""
    for old, new in names.items():
        code = re.sub(rf"(?<![.\w]){re.escape(old)}\b", new, code)
    return code


def recomment(code: str) -> str:
    """The comments replaced by the copier's own, and the layout changed."""
    lines = []
    for line in code.splitlines():
        body = re.sub(r"\s+#.*$", "", line).replace(" @ ", "@").replace(", ", ",")
        lines.append(body)
        if body.rstrip().endswith(":") and body.lstrip().startswith("def "):
            lines.append(" " * (len(body) - len(body.lstrip()) + 4) + "# worked this out myself")
    return "\n\n".join(lines)


def reference_answers(assignment: str) -> dict[str, str]:
    source = nbformat.read(ROOT / "source" / assignment / ASSIGNMENTS[assignment], as_version=4)
    return {grade_id(c): solution_code(c) for c in source.cells if is_solution_cell(c)}


# --- 01_causal_attention ------------------------------------------------------------------------

ONE_LINE_MASK = '''def causal_mask(n_queries, n_keys, device=None):
    """BoolTensor[n_queries, n_keys]: True where query i may attend key j, i.e. j <= i + (n_keys - n_queries)."""
    if n_queries > n_keys:
        raise ValueError("more queries than keys")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries)
'''

AMARA_01 = {
    "causal_mask": ONE_LINE_MASK,
    "attention_weights": '''def attention_weights(q, k, causal=True):
    d = q.size(-1)
    logits = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    if causal:
        keep = causal_mask(q.size(-2), k.size(-2), device=q.device)
        logits = logits.masked_fill(keep.logical_not(), float("-inf"))
    return logits.softmax(dim=-1)
''',
    "attention": '''def attention(q, k, v, causal=True):
    return torch.matmul(attention_weights(q, k, causal=causal), v)
''',
    "heads": '''def split_heads(x, n_heads):
    b, t, c = x.size()
    return x.reshape(b, t, n_heads, c // n_heads).permute(0, 2, 1, 3)


def merge_heads(x):
    b, h, t, d = x.size()
    return x.permute(0, 2, 1, 3).reshape(b, t, h * d)
''',
    "gpt2_attention": '''def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    flat = torch.addmm(c_attn_bias, x.reshape(-1, x.size(-1)), c_attn_weight)
    q, k, v = flat.reshape(*x.shape[:-1], -1).chunk(3, dim=-1)
    heads = [split_heads(part, n_heads) for part in (q, k, v)]
    out = merge_heads(attention(*heads))
    return torch.addmm(c_proj_bias, out.reshape(-1, out.size(-1)), c_proj_weight).reshape(out.shape)
''',
}

BRUNO_01 = {
    "causal_mask": ONE_LINE_MASK,  # the same short function as amara's, written independently
    "attention_weights": '''def attention_weights(q, k, causal=True):
    scale = q.shape[-1] ** -0.5
    s = torch.einsum("...id,...jd->...ij", q, k) * scale
    if causal:
        allowed = causal_mask(s.shape[-2], s.shape[-1], device=s.device)
        s = torch.where(allowed, s, torch.full_like(s, float("-inf")))
    w = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return w / w.sum(dim=-1, keepdim=True)
''',
    "attention": '''def attention(q, k, v, causal=True):
    w = attention_weights(q, k, causal)
    return torch.einsum("...ij,...jd->...id", w, v)
''',
    "heads": '''def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.unflatten(-1, (n_heads, D // n_heads)).transpose(-3, -2)


def merge_heads(x):
    return x.transpose(-3, -2).flatten(-2)
''',
    "gpt2_attention": '''def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    D = x.shape[-1]
    proj = x @ c_attn_weight + c_attn_bias
    q = split_heads(proj[..., :D], n_heads)
    k = split_heads(proj[..., D:2 * D], n_heads)
    v = split_heads(proj[..., 2 * D:], n_heads)
    y = attention(q, k, v)
    return merge_heads(y) @ c_proj_weight + c_proj_bias
''',
}

CHEN_01 = {
    "causal_mask": '''def causal_mask(n_queries, n_keys, device=None):
    if n_queries > n_keys:
        raise ValueError("more queries than keys")
    rows = torch.arange(n_keys - n_queries, n_keys, device=device).unsqueeze(1)
    cols = torch.arange(n_keys, device=device).unsqueeze(0)
    return cols <= rows
''',
    "attention_weights": '''def attention_weights(q, k, causal=True):
    n_q, n_k = q.shape[-2], k.shape[-2]
    att = (q @ k.mT) / math.sqrt(k.shape[-1])
    if causal:
        att = att.masked_fill(causal_mask(n_q, n_k, att.device) == False, -math.inf)
    return torch.nn.functional.softmax(att, dim=-1)
''',
    "attention": '''def attention(q, k, v, causal=True):
    weights = attention_weights(q, k, causal=causal)
    return weights @ v
''',
    "heads": '''def split_heads(x, n_heads):
    batch, seq, dim = x.shape
    size = dim // n_heads
    return torch.stack([x[..., h * size:(h + 1) * size] for h in range(n_heads)], dim=1)


def merge_heads(x):
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)
''',
    "gpt2_attention": '''def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    hidden = x.shape[2]
    fused = torch.nn.functional.linear(x, c_attn_weight.t(), c_attn_bias)
    queries, keys, values = fused.split(hidden, dim=2)
    context = attention(split_heads(queries, n_heads), split_heads(keys, n_heads), split_heads(values, n_heads), causal=True)
    return torch.nn.functional.linear(merge_heads(context), c_proj_weight.t(), c_proj_bias)
''',
}

DANA_01 = {
    "causal_mask": '''def causal_mask(n_queries, n_keys, device=None):
    if n_queries > n_keys:
        raise ValueError(f"cannot have {n_queries} queries for {n_keys} keys")
    square = torch.ones(n_keys, n_keys, dtype=torch.bool, device=device).tril()
    return square[n_keys - n_queries:]
''',
    "attention_weights": '''def attention_weights(q, k, causal=True):
    d_head = q.shape[-1]
    raw = q.matmul(k.transpose(-2, -1)).div(d_head ** 0.5)
    if causal:
        blocked = ~causal_mask(raw.size(-2), raw.size(-1), device=raw.device)
        raw = raw.masked_fill(blocked, -torch.inf)
    return torch.softmax(raw, -1)
''',
    "attention": '''def attention(q, k, v, causal=True):
    return attention_weights(q, k, causal).matmul(v)
''',
    "heads": '''def split_heads(x, n_heads):
    return x.view(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


def merge_heads(x):
    x = x.transpose(1, 2).contiguous()
    return x.view(x.shape[0], x.shape[1], -1)
''',
    "gpt2_attention": '''def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    q, k, v = torch.tensor_split(x @ c_attn_weight + c_attn_bias, 3, dim=-1)
    q, k, v = map(lambda t: split_heads(t, n_heads), (q, k, v))
    mixed = attention(q, k, v, causal=True)
    return torch.baddbmm(c_proj_bias.expand(x.shape[0], *c_proj_bias.shape[-1:]).unsqueeze(1),
                         merge_heads(mixed), c_proj_weight.expand(x.shape[0], *c_proj_weight.shape))
''',
}

RENAMES_01 = {"query_pos": "qi", "key_pos": "kj", "offset": "shift", "scores": "logits", "allowed": "visible",
              "batch": "nb", "length": "seq_len", "width": "d_model", "head_dim": "dh", "y": "out", "t": "part"}


def _heads_reordered(code: str) -> str:
    """merge_heads first, then split_heads (the helpers of one cell swapped)."""
    split, merge = code.split("\n\n\ndef merge_heads")
    return "def merge_heads" + merge.rstrip() + "\n\n\n" + split.strip() + "\n"


def students_01() -> list[Written]:
    reference = reference_answers("01_causal_attention")
    code = {k: v for k, v in reference.items() if k in AMARA_01}
    renamed = {k: recomment(rename(v, RENAMES_01)) for k, v in code.items()}
    reordered = {k: recomment(v) for k, v in code.items()}
    reordered["heads"] = _heads_reordered(reordered["heads"])
    moved_mask = reordered.pop("causal_mask")  # and causal_mask moved into a cell of their own at the end
    friend = {k: recomment(rename(v, {"s": "sc", "w": "probs", "proj": "qkv", "scale": "inv_sqrt_d", "D": "width",
                                         "B": "n_batch", "T": "n_tok", "y": "ctx"})) for k, v in BRUNO_01.items()}
    return [
        Written("amara", "amara", AMARA_01),
        Written("bruno", "bruno", BRUNO_01),
        Written("chen", "chen", CHEN_01),
        Written("dana", "dana", DANA_01),
        Written("erin", "erin", {"causal_mask": ONE_LINE_MASK}),  # only the first exercise, the same line as amara's and bruno's
        Written("ref_renamed", REFERENCE, renamed),
        Written("ref_reordered", REFERENCE, reordered, added=(moved_mask,)),
        Written("bruno_friend", "bruno", friend),
    ]


# --- 02_kv_cache --------------------------------------------------------------------------------

ONE_LINE_BYTES = '''def kv_cache_bytes(batch_size, n_layers, n_kv_heads, head_dim, seq_len, bytes_per_element):
    """Bytes of the keys and values of every layer (an int)."""
    return 2 * batch_size * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_element
'''

AMARA_02 = {
    "kv_cache": '''class KVCache:
    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        self.k = torch.empty(batch_size, n_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.max_len = max_len
        self.pos = 0

    def __len__(self):
        return self.pos

    def update(self, k_new, v_new):
        n = k_new.size(2)
        if self.pos + n > self.max_len:
            raise ValueError("KV cache overflow")
        self.k[:, :, self.pos:self.pos + n].copy_(k_new)
        self.v[:, :, self.pos:self.pos + n].copy_(v_new)
        self.pos += n
        return self.k.narrow(2, 0, self.pos), self.v.narrow(2, 0, self.pos)
''',
    "cached_attention": '''def cached_gpt2_attention(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache):
    q, k, v = torch.addmm(c_attn_bias, x_new.flatten(0, 1), c_attn_weight).unflatten(0, x_new.shape[:2]).chunk(3, -1)
    keys, values = cache.update(split_heads(k, n_heads), split_heads(v, n_heads))
    out = merge_heads(attention(split_heads(q, n_heads), keys, values))
    return out @ c_proj_weight + c_proj_bias
''',
    "generate": '''def greedy_generate(model, input_ids, max_new_tokens, use_cache=True):
    if not use_cache:
        out = input_ids
        for step in range(max_new_tokens):
            out = torch.cat([out, model(out)[:, -1:].argmax(-1)], dim=-1)
        return out
    caches = model.new_caches(input_ids.size(0), input_ids.size(1) + max_new_tokens)
    out, feed = input_ids, input_ids
    for step in range(max_new_tokens):
        feed = model(feed, caches)[:, -1:].argmax(-1)
        out = torch.cat([out, feed], dim=-1)
    return out
''',
    "bytes": ONE_LINE_BYTES,
}

BRUNO_02 = {
    "kv_cache": '''class KVCache:
    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        self.buffers = torch.zeros(2, batch_size, n_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.filled = 0

    def __len__(self):
        return self.filled

    def update(self, k_new, v_new):
        start, stop = self.filled, self.filled + k_new.shape[-2]
        if stop > self.buffers.shape[-2]:
            raise ValueError(f"cache full: cannot add {k_new.shape[-2]} positions to {start} of {self.buffers.shape[-2]}")
        self.buffers[0, ..., start:stop, :] = k_new
        self.buffers[1, ..., start:stop, :] = v_new
        self.filled = stop
        return self.buffers[0, ..., :stop, :], self.buffers[1, ..., :stop, :]
''',
    "cached_attention": '''def cached_gpt2_attention(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache):
    D = x_new.shape[-1]
    proj = x_new @ c_attn_weight + c_attn_bias
    q = split_heads(proj[..., :D], n_heads)
    k_all, v_all = cache.update(split_heads(proj[..., D:2 * D], n_heads), split_heads(proj[..., 2 * D:], n_heads))
    return merge_heads(attention(q, k_all, v_all)) @ c_proj_weight + c_proj_bias
''',
    "generate": '''def greedy_generate(model, input_ids, max_new_tokens, use_cache=True):
    tokens = input_ids.clone()
    caches = model.new_caches(tokens.shape[0], tokens.shape[1] + max_new_tokens) if use_cache else None
    while tokens.shape[1] < input_ids.shape[1] + max_new_tokens:
        if use_cache:
            fresh = tokens if len(caches[0]) == 0 else tokens[:, -1:]
            logits = model(fresh, caches)
        else:
            logits = model(tokens)
        tokens = torch.cat((tokens, torch.argmax(logits[:, -1, :], dim=-1, keepdim=True)), dim=1)
    return tokens
''',
    "bytes": ONE_LINE_BYTES,
}

CHEN_02 = {
    "kv_cache": '''class KVCache:
    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        self.capacity = max_len
        self.size = 0
        self.key_store = torch.zeros((batch_size, n_kv_heads, max_len, head_dim), dtype=dtype, device=device)
        self.value_store = torch.zeros((batch_size, n_kv_heads, max_len, head_dim), dtype=dtype, device=device)

    def __len__(self):
        return self.size

    def update(self, k_new, v_new):
        count = k_new.shape[2]
        if count + self.size > self.capacity:
            raise ValueError(f"no room: {self.size} + {count} > {self.capacity}")
        for offset in range(count):
            self.key_store[:, :, self.size + offset] = k_new[:, :, offset]
            self.value_store[:, :, self.size + offset] = v_new[:, :, offset]
        self.size += count
        return self.key_store[:, :, :self.size], self.value_store[:, :, :self.size]
''',
    "cached_attention": '''def cached_gpt2_attention(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache):
    hidden = x_new.shape[2]
    fused = torch.nn.functional.linear(x_new, c_attn_weight.t(), c_attn_bias)
    queries, keys, values = [split_heads(part, n_heads) for part in fused.split(hidden, dim=2)]
    all_keys, all_values = cache.update(keys, values)
    context = attention(queries, all_keys, all_values, causal=True)
    return torch.nn.functional.linear(merge_heads(context), c_proj_weight.t(), c_proj_bias)
''',
    "generate": '''def greedy_generate(model, input_ids, max_new_tokens, use_cache=True):
    result = [input_ids]
    if use_cache:
        caches = model.new_caches(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
        step_input = input_ids
        for i in range(max_new_tokens):
            chosen = model(step_input, caches)[:, -1].argmax(dim=-1).unsqueeze(-1)
            result.append(chosen)
            step_input = chosen
    else:
        for i in range(max_new_tokens):
            chosen = model(torch.cat(result, dim=1))[:, -1].argmax(dim=-1).unsqueeze(-1)
            result.append(chosen)
    return torch.cat(result, dim=1)
''',
    "bytes": '''def kv_cache_bytes(batch_size, n_layers, n_kv_heads, head_dim, seq_len, bytes_per_element):
    per_token = 2 * n_kv_heads * head_dim * bytes_per_element
    return per_token * seq_len * n_layers * batch_size
''',
}

RENAMES_02 = {"shape": "dims", "end": "stop_at", "width": "d_model", "k_all": "past_k", "v_all": "past_v", "y": "ctx",
              "ids": "seq", "caches": "state", "unseen": "pending", "logits": "scores", "next_id": "tok", "t": "part"}


def _methods_reordered(code: str) -> str:
    """KVCache's update before __len__."""
    head, rest = code.split("\n    def __len__")
    length, update = rest.split("\n    def update")
    return head.rstrip() + "\n\n    def update" + update.rstrip() + "\n\n    def __len__" + length.rstrip() + "\n"


def students_02() -> list[Written]:
    reference = reference_answers("02_kv_cache")
    code = {k: v for k, v in reference.items() if k in AMARA_02}
    renamed = {k: recomment(rename(v, RENAMES_02)) for k, v in code.items()}
    renamed["kv_cache"] = _methods_reordered(renamed["kv_cache"].replace("\n\n", "\n"))
    friend = {k: recomment(rename(v, {"count": "n_new", "capacity": "limit", "key_store": "ks", "value_store": "vs",
                                        "result": "pieces", "chosen": "best", "step_input": "inp", "hidden": "dm"}))
              for k, v in CHEN_02.items()}
    friend["kv_cache"] = _methods_reordered(friend["kv_cache"].replace("\n\n", "\n"))
    return [
        Written("amara", "amara", AMARA_02),
        Written("bruno", "bruno", BRUNO_02),
        Written("chen", "chen", CHEN_02),
        Written("erin", "erin", {"bytes": ONE_LINE_BYTES}),  # the one-liner every honest student writes, the reference's too
        Written("ref_renamed", REFERENCE, renamed),
        Written("chen_friend", "chen", friend),
    ]


# --- the notebooks ------------------------------------------------------------------------------

EDITED_EXAMPLES = {"01_causal_attention": ("alternative_style", "additive_mask", "no_scale"),
                   "02_kv_cache": ()}  # the example class's students: the solution with a line or two edited


def notebook_of(written: Written, assignment: str):
    """The release with the student's answers in it (and their own cells appended)."""
    release = nbformat.read(ROOT / "release" / assignment / ASSIGNMENTS[assignment], as_version=4)
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if is_solution_cell(cell) and grade_id(cell) in written.answers:
            cell.source = written.answers[grade_id(cell)]
    nb.cells += [nbformat.v4.new_code_cell(code) for code in written.added]
    nbformat.validate(nb)
    return nb


def class_of(assignment: str) -> dict[str, tuple[object, str]]:
    """{student: (notebook, origin)}."""
    written = students_01() if assignment == "01_causal_attention" else students_02()
    students = {w.name: (notebook_of(w, assignment), w.origin) for w in written}
    source = nbformat.read(ROOT / "source" / assignment / ASSIGNMENTS[assignment], as_version=4)
    release = nbformat.read(ROOT / "release" / assignment / ASSIGNMENTS[assignment], as_version=4)
    for example in students_of(assignment):
        if example.name in EDITED_EXAMPLES[assignment]:
            students[f"example_{example.name}"] = (build_submission(example, source, release), REFERENCE)
    students["untouched"] = (copy.deepcopy(release), "untouched")
    return students
