"""How rollout collection scales on Ray: episodes/s in-process, on 1 actor and on 2 actors, one run.

Each configuration runs ``train.py collect``'s library call (:func:`latentguard.critics.rollouts.collect_rollouts`)
from scratch into its own folder on the same jobs: in-process with one torch thread, then on a local
Ray cluster with 1 and 2 actors of one CPU (one torch thread) each. Every timed call includes
loading the model (once in-process, once per actor, the actors in parallel); starting the local
cluster is not timed (it is paid once per session). The shards of the three runs are compared.

    python bench/scale.py [--per-label 64] [--shard 16] [--num-envs 16] [--tokens 64] [--worker-gpus 0]

Last line: one JSON object with ``ray1_vs_inprocess`` and ``ray2_vs_ray1`` (throughput ratios),
the episodes/s of each, ``seconds_per_episode_ray`` (per actor, to extrapolate to N machines) and
``identical`` (the three runs wrote the same shards).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentguard.critics.rollouts import RolloutConfig, collect_rollouts


def shards(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path) as data:
            out.append({k: data[k] for k in data.files})
    return out


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-label", type=int, default=64, help="requests per label (harmful, benign)")
    parser.add_argument("--shard", type=int, default=16, help="episodes per shard (the unit an actor takes)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--worker-gpus", type=float, default=0.0)
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    base = RolloutConfig(model=args.model, limit=args.per_label, shard_episodes=args.shard, num_envs=args.num_envs,
                         max_new_tokens=args.tokens)
    ray.init(num_cpus=2, num_gpus=1 if args.worker_gpus else 0, log_to_driver=False, include_dashboard=False)
    runs = {"inprocess": {}, "ray1": {"ray": "", "workers": 1}, "ray2": {"ray": "", "workers": 2}}
    results, folders = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in runs.items():
            config = replace(base, out=str(Path(tmp) / name), worker_gpus=args.worker_gpus if options else 0.0,
                             device="cuda" if args.worker_gpus and not options else "cpu", **options)
            start = time.perf_counter()
            collect_rollouts(config, progress=False)
            seconds = time.perf_counter() - start
            folders[name] = shards(Path(config.out))
            episodes = sum(len(s["final_cost"]) for s in folders[name])
            results[name] = {"seconds": round(seconds, 1), "episodes": episodes, "episodes_per_s": round(episodes / seconds, 3)}
            print(f"{name}: {episodes} episodes in {seconds:.1f} s ({episodes / seconds:.2f}/s)", flush=True)
    ray.shutdown()
    eps = {k: v["episodes_per_s"] for k, v in results.items()}
    print(json.dumps({
        "ray1_vs_inprocess": round(eps["ray1"] / eps["inprocess"], 3), "ray2_vs_ray1": round(eps["ray2"] / eps["ray1"], 3),
        "episodes_per_s": eps, "seconds_per_episode_ray": round(1 / eps["ray1"], 3),
        "identical": same(folders["inprocess"], folders["ray1"]) and same(folders["inprocess"], folders["ray2"]),
        "runs": results, "worker_gpus": args.worker_gpus, "per_label": args.per_label, "shard": args.shard,
        "num_envs": args.num_envs, "tokens": args.tokens}))


if __name__ == "__main__":
    main()
