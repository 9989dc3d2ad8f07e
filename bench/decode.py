"""Backend decoding speed against transformers' own ``generate``, and model load time.

Same model, same prompts, same number of new tokens (end-of-sequence forbidden until then, in
both), greedy, measured in one run with the two loops alternating; the reported tokens/s is the
median over repeats, and the tokens of both are checked to be identical. Load times are measured
in fresh processes: cold (an empty cache: GGUF dequantization) and cached (safetensors from the
user cache); importing torch and transformers (import_s, ~6 s on 2 cores) is not part of them.

    python bench/decode.py [--new-tokens 64] [--repeats 5] [--device cpu]

The last line of output is one JSON object: ratio_b1, ratio_b8 (backend tokens/s divided by
generate tokens/s), load_cold_s, load_cached_s, and the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prompts import PROMPTS
from timing import alternate

from latentguard.lm import generate, load_lm

# The libraries are imported before the clock starts (reported as import_s): the load time is
# what load_lm itself costs, as in the ~20 s GGUF figure it is compared with.
LOAD_SNIPPET = """
import json, time
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationMixin, PreTrainedModel
from latentguard.lm import load_lm
t1 = time.perf_counter()
lm = load_lm({model!r}, device={device!r})
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1}}))
"""


def time_load(model: str, device: str, cache: str) -> dict:
    """Load the model in a fresh process with ``LATENTGUARD_CACHE=cache``; returns its timings."""
    env = {**os.environ, "LATENTGUARD_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET.format(model=model, device=device)],
        env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def hf_generate(lm, prompts, new_tokens):
    """transformers' generate on the same left-padded batch; returns (seconds, token lists)."""
    ids = [lm.encode_prompt(p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[lm.pad_token_id] * (width - len(i)) + i for i in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=lm.device)
    sync(lm.device)
    start = time.perf_counter()
    out = lm.model.generate(
        input_ids=input_ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, pad_token_id=lm.pad_token_id,
    )
    sync(lm.device)
    return time.perf_counter() - start, out[:, width:].tolist()


def ours(lm, prompts, new_tokens):
    """The backend's step loop; returns (seconds, token lists)."""
    sync(lm.device)
    start = time.perf_counter()
    result = generate(lm, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    sync(lm.device)
    return time.perf_counter() - start, [c.token_ids for c in result.completions]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(lm, batch: int, new_tokens: int, repeats: int) -> dict:
    prompts = PROMPTS[:batch]
    ours(lm, prompts, 4), hf_generate(lm, prompts, 4)  # warm-up
    times, outputs = alternate([("backend", lambda: ours(lm, prompts, new_tokens)),
                                ("generate", lambda: hf_generate(lm, prompts, new_tokens))], repeats)
    same = all(o["backend"] == o["generate"] for o in outputs)
    n = batch * new_tokens
    tps = {k: n / statistics.median(v) for k, v in times.items()}
    print(
        f"batch {batch}: backend {tps['backend']:.1f} tok/s, generate {tps['generate']:.1f} tok/s, "
        f"ratio {tps['backend'] / tps['generate']:.3f}, identical tokens: {same}"
    )
    return {"backend_tps": tps["backend"], "generate_tps": tps["generate"], "ratio": tps["backend"] / tps["generate"],
            "identical_tokens": same, "seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true", help="do not measure cold/cached load")
    args = parser.parse_args()

    result: dict = {"model": args.model, "device": args.device, "dtype": args.dtype, "new_tokens": args.new_tokens,
                    "threads": torch.get_num_threads()}
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as cache:
            cold = time_load(args.model, args.device, cache)
            cached = time_load(args.model, args.device, cache)
        result.update(load_cold_s=cold["load_s"], load_cached_s=cached["load_s"], import_s=cached["import_s"])
        print(f"load: cold {cold['load_s']:.1f} s, cached {cached['load_s']:.2f} s (imports {cached['import_s']:.1f} s)")
    lm = load_lm(args.model, device=args.device, dtype=args.dtype)
    for batch in (1, 8):
        figures = compare(lm, batch, args.new_tokens, args.repeats)
        result[f"ratio_b{batch}"] = figures["ratio"]
        result[f"backend_tps_b{batch}"] = figures["backend_tps"]
        result[f"generate_tps_b{batch}"] = figures["generate_tps"]
        result[f"identical_tokens_b{batch}"] = figures["identical_tokens"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
