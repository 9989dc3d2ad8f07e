"""A soak run: latentguard-serve under many streaming clients for a bounded time.

The server runs as its own process (``latentguard-serve`` on 127.0.0.1, default model and guard), as
it would be deployed; the clients are threads here. Each client loops until the deadline: a request
of a mixed method (half plain sampling, a quarter CARE, an eighth critic search, an eighth
``learned-care``: four of the methods the server batches continuously) for a prompt of the
default set, streamed; one request in eight is dropped after its first chunk (the client goes
away), and one in forty names an unknown method (an intended 400). Measured: the server's resident
memory after the warm-up and at the end, what each request ended with, and the rows in flight once
the clients stop (they must go back to 0).

    python bench/soak.py [--minutes 10] [--clients 16] [--warmup 180]

Last line: one JSON object (``rss_end_over_warm`` must stay within 1.1, ``unexpected`` at 0,
``rows_in_flight_end`` at 0), with the server's RSS every 30 s (``rss_mb_every_30s``) and its trend
(``rss_trend``: the second half's median over the first half's, after the warm-up).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentguard.data.prompt_sets import load_prompt_set

MODEL = "smollm2-135m-instruct"
MIX = ["vanilla"] * 4 + ["care"] * 2 + ["critic-search", "learned-care"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_trend(trace: list[float], warmup: float, every: float = 30.0) -> float | None:
    """The median RSS of the second half of the samples after the warm-up over that of the first half:
    about 1 when memory only rises and falls with the load, above 1 when it climbs (a leak)."""
    after = trace[int(warmup // every) + 1:]
    if len(after) < 4:
        return None
    half = len(after) // 2
    return round(statistics.median(after[half:]) / statistics.median(after[:half]), 3)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(f"latentguard_{name} "):
            return float(line.split()[1])
    raise KeyError(name)


def one(url: str, rng: random.Random, prompts: list[str], tokens: int) -> str:
    """One request; what it ended with: a finish reason, ``left`` (the client went away),
    ``rejected`` (an intended 400 or a 429) or ``unexpected: ...``."""
    leave = rng.random() < 1 / 8
    method = "no-such-method" if rng.random() < 1 / 40 else rng.choice(MIX)
    body = {"model": f"{MODEL}:{method}", "messages": [{"role": "user", "content": rng.choice(prompts)}],
            "max_tokens": tokens, "stream": True}
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=900) as response:
            if response.status_code != 200:
                response.read()
                error = response.json().get("error", {})
                intended = (response.status_code == 400 and method == "no-such-method") or response.status_code == 429
                return "rejected" if intended else f"unexpected: {response.status_code} {error.get('message')}"
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return f"unexpected: {chunk['error']['message']}"
                if leave:
                    return "left"  # closing the stream here drops the connection
                if reason := chunk["choices"][0]["finish_reason"]:
                    return reason
        return "unexpected: the stream ended without a finish reason"
    except httpx.HTTPError as err:
        return f"unexpected: {type(err).__name__}: {err}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=180.0,
                        help="seconds before the memory reading the end is compared with (RSS climbs for ~2.5 min)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--no-prefix-cache", action="store_true", help="the server feeds every prompt whole")
    args = parser.parse_args()
    prompts = [r.prompt for r in load_prompt_set("default").records]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="latentguard-soak-", suffix=".log", delete=False)  # noqa: SIM115 - the server writes it until it exits
    server = subprocess.Popen([sys.executable, "-m", "latentguard.cli.serve", "--port", str(port),
                               "--max-rows", str(args.clients), "--max-queue", str(4 * args.clients),
                               "--prefix-cache", str(not args.no_prefix_cache).lower()],
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
            if server.poll() is not None:
                raise RuntimeError(f"the server exited; its log: {log.name}")
        outcomes: collections.Counter = collections.Counter()
        lock = threading.Lock()
        start = time.perf_counter()
        deadline = start + 60 * args.minutes

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                result = one(url, rng, prompts, args.tokens)
                with lock:
                    outcomes[result] += 1

        trace: list[float] = []  # the server's RSS every 30 s: a leak climbs, a one-off peak steps once

        def sample() -> None:
            while time.perf_counter() < deadline:
                trace.append(round(rss_mb(server.pid), 1))
                time.sleep(30)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in [*threads, threading.Thread(target=sample, daemon=True)]:
            t.start()
        time.sleep(args.warmup)
        rss_warm = rss_mb(server.pid)
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        end_wait = time.perf_counter()
        while metric(url, "rows_in_flight") > 0 and time.perf_counter() - end_wait < 120:
            time.sleep(1)
        rows_end = metric(url, "rows_in_flight")
        rss_end = rss_mb(server.pid)
        unexpected = {k: v for k, v in outcomes.items() if k.startswith("unexpected")}
        summary = {"clients": args.clients, "minutes": round(wall / 60, 2), "requests": sum(outcomes.values()),
                   "outcomes": dict(outcomes), "unexpected": sum(unexpected.values()),
                   "completed_server": metric(url, "requests_completed_total"), "cancelled_server": metric(url, "requests_cancelled_total"),
                   "failed_server": metric(url, "requests_failed_total"), "rows_in_flight_end": rows_end,
                   "queue_depth_end": metric(url, "queue_depth"), "rss_warm_mb": round(rss_warm, 1),
                   "rss_end_mb": round(rss_end, 1), "rss_end_over_warm": round(rss_end / rss_warm, 3),
                   "rss_mb_every_30s": trace, "rss_trend": rss_trend(trace, args.warmup)}
        for k, v in list(unexpected.items())[:5]:
            print(json.dumps({"unexpected": k, "count": v}))
    finally:
        server.terminate()
        server.wait(120)
    summary["exit_status_after_sigterm"] = server.returncode
    summary["server_log"] = log.name
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
