"""Decode-step attention time and cache bytes of MHA, GQA (several G) and MQA at growing context,
measured side by side in one run, with ratios to MHA.

    python benchmarks/decode_attention.py [--contexts 512 2048 8192] [--heads 32] [--kv-heads 32 8 4 1]
                                          [--head-dim 128] [--device cpu|cuda] [--dtype float16] [--threads N]

One point is one layer's attention for one new token per sequence: q [B, H, 1, d] against the
cached k, v [B, G, T, d]. Paths (--paths):
  grouped    gqa_attention: a group's query heads as the rows of one matrix product, no copy of k, v
  repeat_kv  repeat_kv (k, v copied H/G times), then attention per query head: the readable way
  broadcast  torch.matmul with k broadcast over a group's query heads (matmul copies it)
  sdpa       F.scaled_dot_product_attention(enable_gqa=True)
Defaults are a Llama-2-7B-sized layer (H = 32, d = 128), batch 1, float32 on a CPU, float16 on a GPU.
The lessons notebooks/03_mqa.ipynb and 04_gqa.ipynb use the same code (attention_course.decode_attention).
"""

import argparse
import platform
import time

import torch

from attention_course.decode_attention import (MODELLED_PATHS, PATHS, decode_inputs, decode_step, format_table,
                                               measure_decode_attention, ratios_to_mha, variant)
from attention_course.memory import peak_memory
from attention_course.runtime import default_device

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--heads", type=int, default=32, help="query heads H")
    parser.add_argument("--kv-heads", type=int, nargs="+", default=[32, 8, 4, 1],
                        help="key/value heads G to compare (H, MHA, is always added: ratios are to it)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: float16 on a GPU, float32 on a CPU")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--repeats", type=int, default=5, help="median of this many samples per point")
    parser.add_argument("--min-ms", type=float, default=10.0, help="a sample lasts at least this long (many calls)")
    parser.add_argument("--working-set-mib", type=float, default=128.0,
                        help="copies of each configuration's inputs fill this much, so caches are read cold")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    n_heads = args.heads
    kv_heads = sorted({n_heads, *args.kv_heads}, reverse=True)
    for g in kv_heads:
        if g < 1 or n_heads % g:
            raise SystemExit(f"--kv-heads {g}: H = {n_heads} query heads must split into G equal groups")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"layer: H = {n_heads} query heads, d = {args.head_dim}, batch {args.batch}, {str(dtype).removeprefix('torch.')}; "
          f"G = {', '.join(f'{g} ({variant(n_heads, g)})' for g in kv_heads)}")
    print(f"per point: one decode step (1 query per head), median of {args.repeats} samples of >= {args.min_ms:g} ms, "
          f"inputs cycled through {args.working_set_mib:g} MiB per configuration")
    for path in args.paths:
        print(f"  {path}: {PATHS[path]}")
    started = time.perf_counter()
    points = measure_decode_attention(n_heads, kv_heads, args.contexts, head_dim=args.head_dim, batch=args.batch,
                                      dtype=dtype, device=device, paths=args.paths, repeats=args.repeats,
                                      min_seconds=args.min_ms / 1e3, working_set=int(args.working_set_mib * 2**20),
                                      progress=lambda line: print(line, flush=True))
    print()
    print("cache bytes: one layer's keys and values, what the step reads; MHA/this: MHA's bytes or time over this row's")
    print(format_table(points))

    longest = max(args.contexts)
    ratio = ratios_to_mha(points)
    by_key = {(p.context, p.n_kv_heads, p.path): p for p in points}
    print(f"\nat context {longest}:")
    for g in kv_heads[1:]:
        line = f"  {variant(n_heads, g):>7}: cache {n_heads // g}x smaller than MHA's; MHA's time / this: "
        line += ", ".join(f"{path} {ratio[longest, g, path]:.2f}x" for path in args.paths)
        if "grouped" in args.paths and len(args.paths) > 1:
            grouped = by_key[longest, g, "grouped"].seconds
            line += "; time / grouped's: " + ", ".join(
                f"{path} {by_key[longest, g, path].seconds / grouped:.2f}x" for path in args.paths if path != "grouped")
        print(line)
    modelled = [path for path in args.paths if path in MODELLED_PATHS]
    if modelled:
        mha_bytes = {path: by_key[longest, n_heads, path].step_bytes for path in modelled}
        print("  bytes each step moves (decode_attention.step_traffic: cache, copies, scores, probabilities, q, output) "
              "and MHA's bytes over them, the most a memory-bound step can gain:")
        for g in kv_heads:
            print(f"  {variant(n_heads, g):>7}: " + ", ".join(
                f"{path} {by_key[longest, g, path].step_bytes / 2**20:.2f} MiB ({mha_bytes[path] / by_key[longest, g, path].step_bytes:.2f}x)"
                for path in modelled))
    q, k, v = decode_inputs(args.batch, n_heads, kv_heads[-1], longest, args.head_dim, dtype, device)
    peaks = ", ".join(f"{path} {peak_memory(decode_step(path), q, k, v, device=device) / 2**20:.1f}" for path in args.paths)
    print(f"  peak memory a {variant(n_heads, kv_heads[-1])} step allocates (MiB; its cache holds "
          f"{2 * k.numel() * k.element_size() / 2**20:.1f}): {peaks}"
          + ("; on a CPU, buffers inside a fused kernel are not seen" if device.type == "cpu" else ""))
    print(f"\nmeasured in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
