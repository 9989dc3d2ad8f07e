"""Parallel jobs on Ray actors (issue 15): the same results as in-process, faults, bad options.

The tests start one local Ray cluster (``ray.init(num_cpus=2)``) for the module, on the tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentguard.cli.config_args import parse_config
from latentguard.critics.rollouts import RolloutConfig, collect_rollouts, training_records
from latentguard.evaluation.runner import EvalConfig, read_samples, run_evaluation
from latentguard.workers.pool import WorkerConfig, WorkerPool, check_reachable

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_time"}  # what may differ between two runs of the same answers


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}})
    # pytest imports this file as `test_workers` (tests/ on sys.path): the actors must find it too
    yield
    ray.shutdown()


def square(state, item):
    return state["offset"] + item * item


def offset_state():
    return {"offset": 100}


def die_once(state, item):
    """Kills its actor the first time it meets item 3 (a marker file remembers), else squares."""
    marker = Path(state["marker"])
    if item == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return item * item


def marker_state(path):
    return {"marker": path}


def eval_config(tmp_path, name, **kw):
    return EvalConfig(**{"methods": "vanilla,care:b=4:N=2", "prompts": "builtin", "model": "tiny", "guard": "keyword",
                         "judge": "refusal", "max_new_tokens": 12, "limit": 5, "chunk": 2, "progress": False,
                         "out": str(tmp_path / name), **kw})


def strip(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_an_actor_killed_mid_run_loses_nothing_and_the_result_is_complete(cluster, tmp_path):
    from functools import partial

    pool = WorkerPool(partial(marker_state, str(tmp_path / "died")), WorkerConfig(ray="", workers=2))
    results = dict(pool.imap(die_once, list(range(8))))
    pool.close()
    assert (tmp_path / "died").exists() and pool.restarts == 1
    assert results == {i: i * i for i in range(8)}


def test_the_pool_gives_the_same_results_in_process_and_on_actors(cluster):
    local = dict(WorkerPool(offset_state).imap(square, [1, 2, 3]))
    pool = WorkerPool(offset_state, WorkerConfig(ray="", workers=2))
    remote = dict(pool.imap(square, [1, 2, 3]))
    pool.close()
    assert local == remote == {0: 101, 1: 104, 2: 109}


def test_an_in_process_pool_uses_a_state_it_is_given_and_actors_build_their_own(cluster):
    def never_called():
        raise AssertionError("setup must not run when a state is given in-process")

    assert dict(WorkerPool(never_called, state={"offset": 5}).imap(square, [1, 2])) == {0: 6, 1: 9}
    pool = WorkerPool(offset_state, WorkerConfig(ray="", workers=1), state={"offset": 5})
    assert pool.state is None and dict(pool.imap(square, [1])) == {0: 101}
    pool.close()


def test_evaluation_samples_are_identical_in_process_and_on_two_actors(cluster, tmp_path):
    import torch

    torch.set_num_threads(1)  # as each actor
    run_evaluation(eval_config(tmp_path, "local"))
    run_evaluation(eval_config(tmp_path, "ray", ray="", workers=2))
    local, remote = (read_samples(tmp_path / name / "samples.jsonl") for name in ("local", "ray"))
    assert len(local) == 2 * 4 and strip(local) == strip(remote)  # 2 methods x 4 built-in prompts, in prompt order


def test_collected_shards_are_identical_in_process_and_on_two_actors(cluster, tmp_path):
    import torch

    torch.set_num_threads(1)
    base = {"model": "tiny", "guard": "keyword", "reward": "repetition", "max_new_tokens": 10, "num_envs": 3,
            "shard_episodes": 4, "limit": 2, "layer": 1}
    jobs = len(training_records(2))
    local = collect_rollouts(RolloutConfig(**base, out=str(tmp_path / "local")), progress=False)
    remote = collect_rollouts(RolloutConfig(**base, out=str(tmp_path / "ray"), ray="", workers=2), progress=False)
    names = sorted(p.name for p in local.glob("shard-*.npz"))
    assert names == sorted(p.name for p in remote.glob("shard-*.npz")) and len(names) == -(-jobs // 4) >= 3
    for name in names:
        with np.load(local / name) as a, np.load(remote / name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    manifest = json.loads((remote / "manifest.json").read_text())
    assert manifest["layer"] == 1 and manifest["hidden_size"] > 0 and manifest["shards"] == len(names)


def test_without_the_ray_flag_ray_is_never_imported(tmp_path):
    code = ("import sys; from latentguard.evaluation.runner import EvalConfig, run_evaluation; "
            f"run_evaluation(EvalConfig(methods='vanilla', prompts='builtin', model='tiny', guard='keyword', "
            f"judge='refusal', max_new_tokens=4, limit=2, progress=False, out={str(tmp_path / 'e')!r})); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_ray_option_takes_an_optional_address():
    assert parse_config(EvalConfig, []).ray is None
    assert parse_config(EvalConfig, ["--ray"]).ray == ""
    assert parse_config(EvalConfig, ["--ray", "auto", "--workers", "3"]).ray == "auto"


def test_an_unreachable_address_is_named_without_a_hang():
    with pytest.raises(ConnectionError, match=r"cannot reach a Ray cluster at '127.0.0.1:1' within 2 s"):
        check_reachable("127.0.0.1:1", timeout=2)
    with pytest.raises(ValueError, match="--ray address must be 'auto', empty .* or HOST:PORT, got 'nowhere'"):
        check_reachable("nowhere", timeout=2)


@pytest.mark.parametrize("field, value, message", [
    ("workers", 0, "--workers must be >= 1, got 0"),
    ("worker_cpus", 0, "--worker-cpus must be > 0, got 0"),
    ("worker_gpus", -1, "--worker-gpus must be >= 0, got -1"),
])
def test_bad_worker_options_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**{field: value})


def test_more_gpus_per_worker_than_the_cluster_has_is_refused(cluster, tmp_path):
    with pytest.raises(ValueError, match=r"--worker-gpus 1 asks for more GPUs per worker than the cluster has \(0\)"):
        run_evaluation(eval_config(tmp_path, "gpu", ray="", worker_gpus=1))


def broken_state():
    raise FileNotFoundError("no model here")


def test_a_worker_that_cannot_start_is_an_error_naming_why(cluster):
    pool = WorkerPool(broken_state, WorkerConfig(ray="", workers=1))
    with pytest.raises(RuntimeError, match="(?s)a Ray worker could not start: .*no model here"):
        list(pool.imap(square, [1]))
    assert pool.restarts == 0  # not retried: every new actor would fail the same way


def test_guard_answers_are_identical_in_process_and_on_two_actors(cluster, tmp_path):
    import torch

    from latentguard.data.prompt_sets import PromptRecord
    from latentguard.lm import load_lm
    from latentguard.training.guard_answers import CollectConfig, collect_answers

    torch.set_num_threads(1)
    lm = load_lm("tiny")
    records = [PromptRecord(p, "benign") for p in ("Name a fruit.", "Say hi.", "Count to three.", "Spell cat.")]
    config = CollectConfig(samples=2, max_new_tokens=6, prefixes=(3, 6), layers=(1,), batch_size=2)
    local = collect_answers(lm, records, config, tmp_path / "local", progress=False)
    remote = collect_answers(lm, records, config, tmp_path / "ray", progress=False, workers=WorkerConfig(ray="", workers=2))
    assert len(remote) == 8 and remote.texts == local.texts and remote.prompts == local.prompts
    assert all(np.array_equal(local.features[k], remote.features[k]) for k in local.features)
    assert sorted(p.name for p in (tmp_path / "ray").glob("shard-*.npz")) == \
        sorted(p.name for p in (tmp_path / "local").glob("shard-*.npz"))


def test_a_learned_policy_evaluates_the_same_on_actors(cluster, tmp_path):
    import torch

    from latentguard.training.policy_training import PolicyTrainConfig, train_policy

    torch.set_num_threads(1)
    train_policy(PolicyTrainConfig(model="tiny", guard="keyword", reward="coherence", buffer=4, max_new_tokens=12,
                                   limit=3, eval_limit=2, num_envs=4, total_timesteps=64, n_steps=16, batch_size=32,
                                   n_epochs=1, eval_every=0, out=str(tmp_path / "policy")), progress=False)
    method = f"learned-care:path={tmp_path / 'policy' / 'policy'}"
    run_evaluation(eval_config(tmp_path, "local", methods=method))
    run_evaluation(eval_config(tmp_path, "ray", methods=method, ray="", workers=2))
    local, remote = (read_samples(tmp_path / name / "samples.jsonl") for name in ("local", "ray"))
    assert len(local) == 4 and strip(local) == strip(remote)


def test_the_policy_dev_evaluations_are_the_same_on_actors(cluster, tmp_path):
    import torch

    from latentguard.training.policy_training import PolicyTrainConfig, train_policy

    torch.set_num_threads(1)
    base = {"model": "tiny", "guard": "keyword", "reward": "coherence", "buffer": 4, "max_new_tokens": 12, "limit": 3,
            "eval_limit": 2, "num_envs": 4, "total_timesteps": 128, "n_steps": 16, "batch_size": 32, "n_epochs": 1,
            "eval_every": 64}
    local = train_policy(PolicyTrainConfig(**base, out=str(tmp_path / "local")), progress=False)
    remote = train_policy(PolicyTrainConfig(**base, out=str(tmp_path / "ray"), ray="", workers=2), progress=False)

    def measured(evals):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in evals]

    assert [e["timesteps"] for e in local["evals"]] == [0, 64, 128] and local["evals"][0]["prompts"] > 4  # > 1 chunk
    assert measured(local["evals"]) == measured(remote["evals"])
