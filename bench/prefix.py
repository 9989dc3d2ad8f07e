"""What the prefix cache saves: a prompt's time to its first token with the shared head reused, against
the head computed for every prompt, in the same run.

One request at a time (as a lone client of the server sees it), plain sampling of ``--tokens`` tokens
(1: the prefill and one step), with the chat template's default head (24 tokens on SmolLM2) and with
a long system prompt (``--system-words`` words) that every request shares. Times are medians over
the prompts and repeats, the cache on and off alternating (:func:`timing.alternate`).

    python bench/prefix.py [--prompts 16] [--tokens 1] [--repeats 3] [--system-words 150]

Last line: one JSON object with ``with_vs_without_<head>`` (median seconds of a request with the
cache over without, below 1 being a saving; with ``--tokens 1`` that is the time to the first
token), the head's and the prompts' lengths in tokens, and whether the answers are the same token
for token (``same_answers_<head>``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import alternate

from latentguard.data.prompt_sets import load_prompt_set
from latentguard.serving import Generator

SYSTEM = ("You are a helpful, careful assistant for a public library's help desk. Answer the visitor's "
          "question in plain words, briefly and accurately; say so when you do not know; do not give "
          "advice that could hurt someone; keep a friendly, respectful tone. ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--system-words", type=int, default=150, help="length of the long system prompt, in words")
    args = parser.parse_args()
    for name in ("prompts", "tokens", "repeats", "system_words"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    prompts = [r.prompt for r in load_prompt_set("benign:dev").records[: args.prompts]]
    words = (SYSTEM.split() * (args.system_words // len(SYSTEM.split()) + 1))[: args.system_words]
    gen = Generator(guard="", reward="")
    lm = gen.lm
    result: dict = {"prompts": len(prompts), "tokens": args.tokens, "repeats": args.repeats}
    for head, system in (("default", None), ("long_system_prompt", " ".join(words))):
        lm.system_prompt = system
        lm.prefixes.add(lm.chat_head_ids())
        gen.generate(prompts[:1], "vanilla", max_new_tokens=args.tokens)  # warm-up

        def serial(cached: bool) -> tuple[float, list]:
            lm.prefixes.enabled = cached
            seconds, texts = [], []
            for prompt in prompts:
                start = time.perf_counter()
                texts.append(gen.generate([prompt], "vanilla", max_new_tokens=args.tokens)[0].text)
                seconds.append(time.perf_counter() - start)
            lm.prefixes.enabled = True
            return statistics.median(seconds), texts

        times, outputs = alternate([("with", lambda: serial(True)), ("without", lambda: serial(False))], args.repeats)
        with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
        result[f"with_vs_without_{head}"] = round(with_s / without_s, 3)
        result[f"seconds_{head}"] = {"with": round(with_s, 4), "without": round(without_s, 4)}
        result[f"head_tokens_{head}"] = len(lm.chat_head_ids())
        result[f"prompt_tokens_{head}"] = statistics.median(len(lm.encode_prompt(p)) for p in prompts)
        result[f"same_answers_{head}"] = all(o["with"] == o["without"] for o in outputs)
        print(f"{head}: head {result[f'head_tokens_{head}']} of ~{result[f'prompt_tokens_{head}']} prompt tokens; "
              f"median {with_s * 1000:.0f} ms with the cache, {without_s * 1000:.0f} ms without "
              f"({with_s / without_s:.2f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
