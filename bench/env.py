"""Token environment overhead: TokenCMDPEnv / its vector form against the raw backend step loop.

Same model, same prompts, same tokens (the most likely token that is not end-of-sequence, so
every episode runs the full length), guard checks off, measured in one run with the loops
alternating; steps/s is the median over repeats. The environment does per step what an RL agent
needs: top-k candidates, the latent as numpy, the response text and the info dict.

    python bench/env.py [--model smollm2-135m-instruct] [--steps 64] [--repeats 3]

Last line: one JSON object with env_vs_backend_b1 (TokenCMDPEnv steps/s divided by the backend's
tokens/s at batch 1) and vecenv_vs_backend_b8 (TokenCMDPVectorEnv with 8 sub-envs against the
batched backend loop at batch 8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prompts import PROMPTS
from timing import alternate

from latentguard.envs.token_env import TokenCMDPEnv
from latentguard.envs.token_vector_env import TokenCMDPVectorEnv
from latentguard.lm import load_lm


def backend_loop(lm, prompts, steps):
    """Raw DecodeState loop; returns (seconds for the steps, token rows)."""
    eos = sorted(lm.eos_token_ids)
    state = lm.prefill(prompts)
    tokens = []
    start = time.perf_counter()
    for _ in range(steps):
        logits = state.logits.clone()
        logits[:, eos] = float("-inf")
        tok = logits.argmax(-1)
        tokens.append(tok.tolist())
        state.step(tok)
    return time.perf_counter() - start, np.array(tokens).T.tolist()


def non_eos_actions(candidates: np.ndarray, eos: set[int]) -> np.ndarray:
    """Per row, the index of the first candidate that is not end-of-sequence."""
    return np.array([next(i for i, t in enumerate(row) if int(t) not in eos) for row in candidates])


def env_loop(lm, prompts, steps):
    env = TokenCMDPEnv(model=lm, prompts=prompts, max_new_tokens=steps)
    env.reset(seed=0, options={"prompt": prompts[0]})
    tokens = []
    start = time.perf_counter()
    for _ in range(steps):
        action = int(non_eos_actions(env.candidate_ids()[None], lm.eos_token_ids)[0])
        _, _, _, _, info = env.step(action)
        tokens.append(info["token_id"])
    return time.perf_counter() - start, [tokens]


def vecenv_loop(lm, prompts, steps):
    vec = TokenCMDPVectorEnv(len(prompts), model=lm, prompts=prompts, max_new_tokens=steps)
    vec.reset(seed=0, options={"prompt": list(prompts)})
    tokens = []
    start = time.perf_counter()
    for _ in range(steps):
        _, _, _, _, infos = vec.step(non_eos_actions(vec.candidate_ids(), lm.eos_token_ids))
        tokens.append(infos["token_id"].tolist())
    return time.perf_counter() - start, np.array(tokens).T.tolist()


def compare(lm, name, env_fn, prompts, steps, repeats):
    env_fn(lm, prompts, 2), backend_loop(lm, prompts, 2)  # warm-up
    times, outputs = alternate([("env", lambda: env_fn(lm, prompts, steps)),
                                ("backend", lambda: backend_loop(lm, prompts, steps))], repeats)
    same = all(o["env"] == o["backend"] for o in outputs)
    rate = {k: len(prompts) * steps / statistics.median(v) for k, v in times.items()}
    ratio = rate["env"] / rate["backend"]
    print(f"{name} (batch {len(prompts)}): env {rate['env']:.1f} steps/s, backend {rate['backend']:.1f} tok/s, "
          f"ratio {ratio:.3f}, identical tokens: {same}")
    return ratio, rate, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lm = load_lm(args.model, device=args.device)
    r1, rate1, same1 = compare(lm, "TokenCMDPEnv", env_loop, PROMPTS[:1], args.steps, args.repeats)
    r8, rate8, same8 = compare(lm, "TokenCMDPVectorEnv", vecenv_loop, PROMPTS[:8], args.steps, args.repeats)
    print(json.dumps({
        "model": args.model, "device": args.device, "steps": args.steps,
        "env_vs_backend_b1": r1, "vecenv_vs_backend_b8": r8,
        "env_steps_per_s_b1": rate1["env"], "backend_tps_b1": rate1["backend"],
        "vecenv_steps_per_s_b8": rate8["env"], "backend_tps_b8": rate8["backend"],
        "identical_tokens_b1": same1, "identical_tokens_b8": same8,
    }))


if __name__ == "__main__":
    main()
