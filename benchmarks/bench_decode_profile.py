"""Where a decode step's time goes on the CPU, piece by piece, and what each lever buys.

    python benchmarks/bench_decode_profile.py [--model random:llava-onevision-0.5b]
        [--sections linear,attention,step,rental,profile,static,compile,int8] [--prompt 221]
        [--answers 16,64,256]

Sections (each prints a table; every comparison runs interleaved in this one process, best of
several repeats; the header names the processor, its flags and the load average):
- linear: one row through each weight shape of the model's language model, 24 copies of each (as
  many as decoder layers, so the weights stream from memory as in a real step): bf16 F.linear on a
  (1, K) and a (1, 1, K) input, fp32 F.linear, fbgemm's packed fp16, on 1 and on all threads; GB/s
  of weights read.
- attention: one decode step's attention over 235, 1,600 and 6,000 cached tokens: SDPA against the
  grouped products of models/decode_attention.py, bf16 and fp32, 1 and all threads.
- step: one decode step of the language model called directly (no generate) and inside generate,
  before (stock kernels) and after (the chosen path); the difference is generate's own work.
- profile: torch.profiler's top operators over 5 decode steps, before and after.
- rental: answers of 16, 64 and 256 tokens (`--answers`): stock, packed beforehand, and from an unpacked model that
  packs as decoding pays for it (what a fresh process does), with how much it packed.
- static: a decode step on transformers' StaticCache against the DynamicCache, stock kernels.
- compile: torch.compile of the decode step (inductor, CPU), compile time and step time.
- int8: the two int8 routes torch offers: fbgemm's dynamic int8 linear (activations quantized too)
  and the weight-only `_weight_int8pack_mm` (a private operator, measured only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_dtype import cpu_facts  # noqa: E402
from bench_cpu_limits import best_of, unreachable_eos  # noqa: E402


def thread_counts():
    import torch

    from dycoke_cli.models.cpu_threads import thread_counts as counts

    return counts(torch.get_num_threads())


def with_threads(count: int, fn):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def linear_section(lm) -> None:
    import torch
    import torch.nn.functional as F

    from dycoke_cli.models.cpu_decode import linear_modules
    from dycoke_cli.models.packed_fp16 import fp16_linear, pack_fp16

    layers = lm.adapter.text_layers()
    shapes = []
    for module in linear_modules(lm.model, layers[:1]) + [lm.model.get_output_embeddings()]:
        shape = tuple(module.weight.shape)
        if shape not in [s for s, _ in shapes]:
            shapes.append((shape, module))
    print("\n| weight (N, K) | threads | bf16 (1,K) ms | bf16 (1,1,K) ms | fp32 ms | packed fp16 ms "
          "| GB/s bf16 / fp32 / fp16 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (n, k), module in shapes:
        copies = 1 if n * k > 50_000_000 else len(layers)  # the head is read once a step
        w16 = [module.weight.detach().bfloat16().clone() for _ in range(copies)]
        w32 = [w.float() for w in w16]
        packed = [pack_fp16(w) for w in w16]
        x = torch.randn(1, k)
        kernels = {"bf16 2d": lambda: [F.linear(x.bfloat16(), w) for w in w16],
                   "bf16 3d": lambda: [F.linear(x.bfloat16().view(1, 1, k), w) for w in w16],
                   "fp32": lambda: [F.linear(x, w) for w in w32],
                   "fp16": lambda: [fp16_linear(x, p) for p in packed]}
        with torch.inference_mode():
            for count in thread_counts():
                t = {name: with_threads(count, lambda fn=fn: best_of(fn, 5)) / copies for name, fn in kernels.items()}
                rate = " / ".join(f"{n * k * size / t[name] / 1e9:.1f}"
                                  for name, size in (("bf16 3d", 2), ("fp32", 4), ("fp16", 2)))
                print(f"| ({n}, {k}) x{copies} | {count} | {t['bf16 2d'] * 1e3:.3f} | {t['bf16 3d'] * 1e3:.3f} "
                      f"| {t['fp32'] * 1e3:.3f} | {t['fp16'] * 1e3:.3f} | {rate} |", flush=True)
        del w16, w32, packed


def attention_section(lm) -> None:
    import torch
    import torch.nn.functional as F

    from dycoke_cli.models import decode_attention

    config = lm.adapter.text_config
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    module = torch.nn.Module()
    print(f"\n| cached tokens | dtype | threads | SDPA ms/layer | grouped ms/layer | SDPA ms/step ({layers} layers) "
          "| grouped ms/step |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for length in (235, 1600, 6000):
        for dtype in (torch.bfloat16, torch.float32):
            q = torch.randn(1, heads, 1, dim).to(dtype)
            k, v = (torch.randn(1, kv_heads, length, dim).to(dtype) for _ in range(2))
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # noqa: E731
            grouped = lambda: decode_attention.attend(module, q, k, v, None)  # noqa: E731
            for count in thread_counts():
                a = with_threads(count, lambda: best_of(sdpa, 10))
                b = with_threads(count, lambda: best_of(grouped, 10))
                print(f"| {length:,} | {str(dtype)[6:]} | {count} | {a * 1e3:.3f} | {b * 1e3:.3f} "
                      f"| {a * layers * 1e3:.1f} | {b * layers * 1e3:.1f} |", flush=True)


def prompt_ids(lm, length: int):
    import torch

    vocab = lm.model.get_input_embeddings().num_embeddings
    return torch.randint(min(1000, vocab // 2), min(20000, vocab), (1, length),
                         generator=torch.Generator().manual_seed(length))


def _bare_steps(lm, ids, steps: int, cache=None) -> float:
    """Seconds per decode step of the model called directly, after a prefill."""
    import torch
    from transformers import DynamicCache

    model = lm.model
    with torch.inference_mode():
        cache = cache if cache is not None else DynamicCache(config=model.config)
        token = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / steps


def _generate_steps(lm, ids, steps: int, warm: bool = True) -> float:
    """Seconds per decode step inside generate (its own work included): the time of a generation of
    steps + 1 tokens less one of 1 token (its prefill), both measured after a warm-up unless `warm` is
    False (then the prefill is measured after, so the long generation runs on the state as it is)."""
    import torch

    def run(n):
        with torch.inference_mode(), lm.generating():  # as the engine runs it
            start = time.perf_counter()
            lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              eos_token_id=unreachable_eos(lm.model), do_sample=False, pad_token_id=0)
            return time.perf_counter() - start

    if warm:
        run(2)
    long = run(steps + 1)
    return (long - run(1)) / steps


def step_section(lm, prompt: int) -> None:
    ids = prompt_ids(lm, prompt)
    print(f"\n| setting | prompt | bare step ms | generate step ms | generate's own ms |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for _ in range(2):
        for setting in ("before", "after"):
            lm.decode.use_stock(setting == "before")
            bare, gen = _bare_steps(lm, ids, 16), _generate_steps(lm, ids, 16)
            old = results.get(setting, (float("inf"), float("inf")))
            results[setting] = (min(old[0], bare), min(old[1], gen))
    for setting, (bare, gen) in results.items():
        print(f"| {setting} | {prompt} | {bare * 1e3:.1f} | {gen * 1e3:.1f} | {(gen - bare) * 1e3:.1f} |")


def profile_section(lm, prompt: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    ids = prompt_ids(lm, prompt)
    for setting in ("before", "after"):
        lm.decode.use_stock(setting == "before")
        with torch.inference_mode():
            cache = DynamicCache(config=lm.model.config)
            token = lm.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
            for _ in range(2):
                token = lm.model(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(5):
                    token = lm.model(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        print(f"\n{setting}: top operators over 5 decode steps (prompt {prompt}), self CPU time")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12,
                                                                 max_name_column_width=40,
                                                                 max_shapes_column_width=60))


def rental_section(lm, prompt: int, lengths: tuple[int, ...]) -> None:
    """Answers of several lengths from an unpacked model (a fresh process), against stock and packed."""
    ids = prompt_ids(lm, prompt)
    path = lm.decode
    print(f"\n| new tokens | stock ms/token | packed beforehand ms/token | fresh: packing as it pays, ms/token "
          f"| packed by the end of the answer |")
    print("|---:|---:|---:|---:|---:|")
    total = len(path.pending) + len(path.packed)
    for tokens in lengths:
        results = {}
        for setting in ("stock", "packed", "fresh"):
            path.use_stock(setting == "stock")
            if setting == "fresh":
                path.unpack_all()
            results[setting] = _generate_steps(lm, ids, tokens - 1, warm=setting != "fresh")
            results[f"{setting} packed"] = len(path.packed)
        print(f"| {tokens} | {results['stock'] * 1e3:.1f} | {results['packed'] * 1e3:.1f} "
              f"| {results['fresh'] * 1e3:.1f} "
              f"| {results['fresh packed']} of {total} linears |", flush=True)


def static_section(lm, prompt: int) -> None:
    from transformers import StaticCache

    ids = prompt_ids(lm, prompt)
    lm.decode.use_stock(True)
    rows = {}
    for _ in range(2):
        dynamic = _bare_steps(lm, ids, 16)
        static = _bare_steps(lm, ids, 16, StaticCache(config=lm.model.config, max_cache_len=prompt + 32))
        rows["dynamic"] = min(rows.get("dynamic", float("inf")), dynamic)
        rows["static"] = min(rows.get("static", float("inf")), static)
    print(f"\nstock kernels, prompt {prompt}: DynamicCache {rows['dynamic'] * 1e3:.1f} ms/step, "
          f"StaticCache {rows['static'] * 1e3:.1f} ms/step")


def compile_section(lm, prompt: int) -> None:
    import torch
    from transformers import StaticCache

    ids = prompt_ids(lm, prompt)
    for setting in ("before",):
        lm.decode.use_stock(True)
        model = lm.model
        compiled = torch.compile(model.forward, dynamic=False)
        with torch.inference_mode():
            cache = StaticCache(config=model.config, max_cache_len=prompt + 32)
            token = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
            position = torch.tensor([prompt])
            start = time.perf_counter()
            token = compiled(input_ids=token, cache=cache, use_cache=True,
                             cache_position=position).logits[:, -1:].argmax(-1)
            first = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(1, 9):
                token = compiled(input_ids=token, cache=cache, use_cache=True,
                                 cache_position=position + i).logits[:, -1:].argmax(-1)
            step = (time.perf_counter() - start) / 8
        print(f"\ntorch.compile (inductor) of the decode step, {setting} kernels, StaticCache: first call "
              f"(compiling) {first:.1f} s, then {step * 1e3:.1f} ms/step")


def int8_section(lm) -> None:
    import warnings

    import torch

    from dycoke_cli.models.packed_fp16 import fp16_linear, pack_fp16

    n, k = lm.model.get_output_embeddings().weight.shape
    w = lm.model.get_output_embeddings().weight.detach().float()
    x = torch.randn(1, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        scale = w.abs().amax(1) / 127
        q = torch.quantize_per_channel(w, scale.double(), torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        dynamic = torch.ops.quantized.linear_prepack(q, None)
        pack_int8 = time.perf_counter() - start
        w8 = torch.round(w / scale[:, None]).to(torch.int8)
        start = time.perf_counter()
        packed = pack_fp16(w)
        pack16 = time.perf_counter() - start
        xb = x.bfloat16()
        kernels = {"fp16 packed": lambda: fp16_linear(x, packed),
                   "int8 dynamic (fbgemm)": lambda: torch.ops.quantized.linear_dynamic(x, dynamic, True),
                   "int8 weight-only (_weight_int8pack_mm)":
                       lambda: torch._weight_int8pack_mm(xb, w8, scale.bfloat16())}
        print(f"\nthe output head ({n} x {k}) on one row; packing: fp16 {pack16:.2f} s, int8 {pack_int8:.2f} s")
        print("| kernel | threads | ms | max |error| vs fp32 |")
        print("|---|---:|---:|---:|")
        reference = x @ w.T
        for name, fn in kernels.items():
            for count in thread_counts():
                t = with_threads(count, lambda: best_of(fn, 5))
                error = (fn().float() - reference).abs().max().item()
                print(f"| {name} | {count} | {t * 1e3:.2f} | {error:.2e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--sections", default="linear,attention,step,rental,profile,static,int8")
    parser.add_argument("--prompt", type=int, default=221)
    parser.add_argument("--answers", default="16,64,256", help="answer lengths of the rental section")
    args = parser.parse_args()
    import torch

    from dycoke_cli.models import load_model

    lm = load_model(args.model, device="cpu", dtype="auto", quant="none")
    print(f"{cpu_facts()}; torch {torch.__version__}\nmodel {args.model}, {lm.dtype}; {'; '.join(lm.choices[1:])}")
    for section in args.sections.split(","):
        {"linear": lambda: linear_section(lm), "attention": lambda: attention_section(lm),
         "step": lambda: step_section(lm, args.prompt), "profile": lambda: profile_section(lm, args.prompt),
         "static": lambda: static_section(lm, args.prompt), "compile": lambda: compile_section(lm, args.prompt),
         "rental": lambda: rental_section(lm, args.prompt, tuple(int(n) for n in args.answers.split(","))),
         "int8": lambda: int8_section(lm)}[section]()
    print(f"\nload average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
