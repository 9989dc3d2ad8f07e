"""The server under load: clients on localhost streaming guarded answers from latentguard-serve.

The default model and guard are served by ``latentguard-serve`` in its own process on 127.0.0.1;
the clients are threads of this process. For each method and each
number of concurrent clients (1, 4, 16), the clients share the same fixed list of requests (each
client takes the next request when its answer ends: a bounded loop; by default 48 requests, three per
client at 16 clients, half of them harmful), streamed as server-sent events. ``--requests 16`` sends
one request per client at 16 clients: a burst, whose last and slowest answers then decode alone.
Measured per level: time to the first released text (p50, p95), released tokens per second in
aggregate, requests per second. The same requests go through the batch API (``Generator.generate``,
one call) in the same run, before and after the clients. The most clients and the batch API run ``--repeats``
times, interleaved, and their means are compared (one run of CARE varies by about 10% on 2 cores).

    python bench/serve.py [--methods vanilla,care,critic-search] [--requests 48] [--tokens 64] [--repeats 2]
                          [--prompts harm:dev,benign:dev] [--clients 1,4,16]
                          [--gather-seconds 0.01] [--block-gather-seconds 0.1] [--no-prefix-cache]

Last line: one JSON object; ``batched_vs_serial`` is the aggregate throughput at the most clients
over one client at a time (same requests), ``serve_vs_offline`` the throughput at the most clients
over the batch API's decoding at most as many prompts together as there are clients (the server
holds no more rows than it has requests), ``serve_vs_offline_default_batch`` over the batch API at
the method's own ``batch_size`` (vanilla 32: wider than 16 clients can fill), each per method.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentguard.agents.registry import method_options, parse_spec
from latentguard.data.prompt_sets import load_prompt_set
from latentguard.serving import Generator
from latentguard.serving.config import ServeConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(url: str, model: str, prompt: str, tokens: int) -> dict:
    """Stream one answer; the time to its first released text, its end, and its released tokens."""
    start = time.perf_counter()
    first, released, reason = None, 0, None
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            choice = chunk["choices"][0]
            if choice["delta"].get("content") and first is None:
                first = time.perf_counter() - start
            if choice["finish_reason"]:
                reason = choice["finish_reason"]
                released = chunk["latentguard"]["released_tokens"]
    end = time.perf_counter() - start
    return {"ttft": first if first is not None else end, "seconds": end, "released": released, "reason": reason}


def load(url: str, model: str, prompts: list[str], clients: int, tokens: int) -> dict:
    """``clients`` threads work through ``prompts`` (each takes the next when its answer ends)."""
    results: list[dict] = []
    lock = threading.Lock()
    todo = list(reversed(prompts))

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                prompt = todo.pop()
            result = one_request(url, model, prompt, tokens)
            with lock:
                results.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = sorted(r["ttft"] for r in results)
    released = sum(r["released"] for r in results)
    return {"clients": clients, "requests": len(results), "wall_s": round(wall, 3),
            "ttft_p50_s": round(statistics.median(ttft), 3),
            "ttft_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 3),
            "released_tokens_per_s": round(released / wall, 2), "requests_per_s": round(len(results) / wall, 3),
            "content_filter": sum(r["reason"] == "content_filter" for r in results)}


def start_server(config: ServeConfig) -> subprocess.Popen:
    """``latentguard-serve`` in its own process, as deployed (its decoding thread then shares the
    interpreter with its own event loop only, not with the clients); returns once it answers."""
    server = subprocess.Popen([sys.executable, "-m", "latentguard.cli.serve", "--port", str(config.port),
                               "--max-rows", str(config.max_rows), "--max-queue", str(config.max_queue),
                               "--prefix-cache", str(config.prefix_cache).lower(),
                               "--gather-seconds", str(config.gather_seconds),
                               "--block-gather-seconds", str(config.block_gather_seconds)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{config.port}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(1)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}; run latentguard-serve alone to see why")


def openai_check(url: str, model: str, prompt: str) -> bool:
    """The official ``openai`` client against the served default model: the streamed answer joins
    to the non-streamed one (both seeded by the prompt)."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    asked = dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=16)
    whole = client.chat.completions.create(**asked).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**asked, stream=True))
    if streamed != whole:
        raise AssertionError(f"the streamed answer {streamed!r} differs from the whole one {whole!r}")
    return True


def at_most_rows(method: str, rows: int) -> str:
    """``method`` decoding at most ``rows`` prompts together, as the server does for ``rows`` clients
    (its ``batch_size``, unless the spec sets one or the method has none)."""
    name, options = parse_spec(method)
    if "batch_size" in options or "batch_size" not in method_options(name):
        return method
    return f"{method}:batch_size={min(rows, int(method_options(name)['batch_size']))}"


def offline(gen: Generator, prompts: list[str], method: str, tokens: int) -> float:
    """Released tokens per second of the batch API on ``prompts`` (one call)."""
    start = time.perf_counter()
    answers = gen.generate(prompts, method, max_new_tokens=tokens)
    return sum(r.released_tokens for r in answers) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="vanilla,care,critic-search")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=48,
                        help="requests per level; more than the most clients makes each client loop (a steady state)")
    parser.add_argument("--prompts", default="harm:dev,benign:dev",
                        help="comma-separated prompt sets; their harmful and benign requests alternate")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of the most clients and of the batch API")
    parser.add_argument("--gather-seconds", type=float, default=ServeConfig.gather_seconds,
                        help="the server's idle gather for methods that take requests at every step")
    parser.add_argument("--block-gather-seconds", type=float, default=ServeConfig.block_gather_seconds,
                        help="the server's idle gather for the others (searches, learned-care, whole batches)")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="feed every prompt whole, in the server and the batch API (latentguard.lm.prefix)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    records = [r for name in args.prompts.split(",") for r in load_prompt_set(name).records]
    harmful = [r.prompt for r in records if r.label == "harmful"]
    benign = [r.prompt for r in records if r.label == "benign"]
    prompts = [p for pair in zip(harmful, benign) for p in pair][: args.requests]  # half harmful, half benign
    if len(prompts) < args.requests:
        parser.error(f"--prompts {args.prompts} holds {len(prompts)} alternating requests, fewer than --requests "
                     f"{args.requests}: name more prompt sets (e.g. harm:dev,benign:dev)")
    levels = [int(c) for c in args.clients.split(",")]
    config = ServeConfig(max_rows=max(levels), max_queue=4 * max(levels), port=free_port(),
                         prefix_cache=not args.no_prefix_cache, gather_seconds=args.gather_seconds,
                         block_gather_seconds=args.block_gather_seconds)
    server = start_server(config)
    gen = Generator(config.model, config.guard, config.reward, config.seed)  # the batch API, in this process
    gen.lm.prefixes.enabled = config.prefix_cache
    url = f"http://127.0.0.1:{config.port}"
    summary: dict = {"device": "cpu", "model": config.model, "prompts": args.prompts, "requests": len(prompts),
                     "tokens": args.tokens,
                     "server": "its own process", "prefix_cache": config.prefix_cache,
                     "gather_seconds": config.gather_seconds, "block_gather_seconds": config.block_gather_seconds}
    try:
        summary["openai_client_check"] = openai_check(url, f"{config.model}:vanilla", prompts[1])
        for method in args.methods.split(","):
            model = f"{config.model}:{method}"
            one_request(url, model, prompts[0], 8)  # warm-up: the method's files, the first forwards
            fewer = [load(url, model, prompts, c, args.tokens) for c in levels[:-1]]
            offline_runs, wide_runs, most_runs = [], [], []
            for _ in range(args.repeats):  # interleaved, so that drift hits all alike
                offline_runs.append(offline(gen, prompts, at_most_rows(method, levels[-1]), args.tokens))
                wide_runs.append(offline(gen, prompts, method, args.tokens))
                most_runs.append(load(url, model, prompts, levels[-1], args.tokens))
            for row in fewer + most_runs:
                print(json.dumps({"method": method, **row}))
            rows = fewer + most_runs[-1:]  # per level below: the last run of the most clients
            print(json.dumps({"method": method, "offline_released_tokens_per_s": [round(x, 2) for x in offline_runs],
                              "offline_spec": at_most_rows(method, levels[-1]),
                              "offline_default_batch_released_tokens_per_s": [round(x, 2) for x in wide_runs]}))
            most_tps = statistics.mean(r["released_tokens_per_s"] for r in most_runs)
            offline_tps = statistics.mean(offline_runs)
            serial = rows[0]
            summary[method] = {
                "batched_vs_serial": round(most_tps / max(serial["released_tokens_per_s"], 1e-9), 3),
                "serve_vs_offline": round(most_tps / max(offline_tps, 1e-9), 3),
                "serve_vs_offline_default_batch": round(most_tps / max(statistics.mean(wide_runs), 1e-9), 3),
                "ttft_p50_s": {str(r["clients"]): r["ttft_p50_s"] for r in rows},
                "ttft_p95_s": {str(r["clients"]): r["ttft_p95_s"] for r in rows},
                "released_tokens_per_s": {str(r["clients"]): r["released_tokens_per_s"] for r in rows},
                "requests_per_s": {str(r["clients"]): r["requests_per_s"] for r in rows},
            }
    finally:
        server.terminate()
        server.wait(120)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
