"""Time per generated token at several context lengths, with and without the KV cache, and their
ratio, measured side by side in one run, for the course's decode loop and Hugging Face generate.

    python benchmarks/kv_cache_latency.py [--contexts 64 256 1024] [--device cpu|cuda] [--model gpt2-small-random]

Models (no download unless --model gpt2):
  gpt2-small-random  GPT2Config() defaults (12 layers, 12 heads, width 768), random weights: the compute of GPT-2 small
  local              the course's small local GPT-2 (2 layers, 4 heads, width 128)
  gpt2               real GPT-2 small from the Hugging Face hub (needs the network or a local copy)
The lesson notebooks/02_kv_cache.ipynb plots the same measurements (attention_course.decode_latency).
"""

import argparse
import platform
import time

import torch

from attention_course.decode_latency import LOOPS, format_table, measure_decode_latency
from attention_course.runtime import default_device


def load_model(name: str, device, n_layer: int | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel

    if name == "gpt2":
        return GPT2LMHeadModel.from_pretrained("gpt2").to(device).eval()
    if name == "local":
        from attention_course.models import local_gpt2

        overrides = {"n_layer": n_layer} if n_layer else {}
        return local_gpt2(device=device, **overrides).model
    if name == "gpt2-small-random":
        torch.manual_seed(0)
        config = GPT2Config() if not n_layer else GPT2Config(n_layer=n_layer)
        return GPT2LMHeadModel(config).to(device).eval()
    raise SystemExit(f"unknown model {name!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--model", default="gpt2-small-random", choices=["gpt2-small-random", "local", "gpt2"])
    parser.add_argument("--n-layer", type=int, default=None, help="override the number of layers (smoke tests)")
    parser.add_argument("--new-tokens", type=int, default=8, help="decode steps timed per point")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs per point")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), choices=list(LOOPS))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    model = load_model(args.model, device, args.n_layer)
    config = model.config
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"model: {args.model}: {config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, float32, "
          f"HF attention implementation {config._attn_implementation}")
    print(f"per point: {args.new_tokens} decode steps ending at the context, median of {args.repeats} runs")
    for loop in args.loops:
        print(f"  {loop}: {LOOPS[loop]}")
    started = time.perf_counter()
    points = measure_decode_latency(model, args.contexts, n_new=args.new_tokens, repeats=args.repeats, loops=args.loops,
                                    progress=lambda line: print(line, flush=True))
    print()
    print(format_table(points))
    print(f"\nmeasured in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
