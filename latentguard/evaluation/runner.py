"""Guarded rollouts on prompt sets -> per-answer samples -> metrics (the library behind evaluate.py).

For every method x prompt set x prompt the run stores one sample (``samples.jsonl``): the released
text, the method's costs (tokens, wall time, wait tokens, interventions, guard calls), each judge's
verdicts (``judgements.<judge>.harmful/.refused/.coherent/.helpful``), the task rewards
(``relevance``, ``repetition``) and the run guard's risk of the released text. Samples are written
atomically after every chunk of prompts; a rerun with the same ``--out`` skips what is done (and
judges old samples with any judge they lack), so an interrupted run loses nothing already written.

With ``--ray [ADDRESS]`` the chunks (a method on up to ``chunk`` prompts) are decoded and scored on
Ray actors, ``--workers`` of them, each with its own model replica (:mod:`latentguard.workers.pool`); the judges
run here, and the samples are merged in prompt order: the same file as in-process, wall times apart.

Every option is checked (methods, prompt sets, guard, judges, and judges that share a signal with
the guard of a method that uses it) before anything is written to ``--out``, so a bad option leaves
nothing behind that blocks the next run. ``--rejudge FILE`` judges an existing samples file
without decoding (:mod:`latentguard.evaluation.rejudge`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latentguard.agents.base import Method, RunContext, resolve_budget
from latentguard.agents.registry import make_method
from latentguard.common.storage import atomic_write_json, atomic_write_text, check_out_dir, read_json_file
from latentguard.data.attacks import after_prefill, attack_set, get_attack
from latentguard.data.prompt_sets import PromptSet, load_prompt_set
from latentguard.evaluation.validation import JudgePanel, build_panel, guard_conflicts, judge_rows, split_list
from latentguard.guards import Guard, checked_risk, make_guard, violations
from latentguard.lm import DEFAULT_MODEL, SamplingConfig, load_lm
from latentguard.lm.loading import resolve_dtype
from latentguard.rewards import RelevanceReward, RepetitionReward, make_reward
from latentguard.workers.pool import WorkerConfig, WorkerPool, init_ray

# settings that change what a sample contains: a resumed run must agree on them
RESULT_FIELDS = ("model", "dtype", "guard", "reward", "budget", "max_new_tokens", "temperature", "top_p", "seed")


@dataclass
class EvalConfig(WorkerConfig):
    """Run decoding methods over prompt sets and report safety, quality and speed (in-process, or
    on Ray actors with ``--ray``: :class:`latentguard.workers.pool.WorkerConfig`)."""

    methods: str = "vanilla,best-of-n,care,care-resample,critic-search"
    """Comma-separated method specs (name or name:key=value, e.g. best-of-n:n=8)."""
    prompts: str = "default"
    """Comma-separated prompt sets: default, advbench[:split], harm[:split], benign[:split], builtin, or a .jsonl/.csv/.txt file."""
    attack: str = "none"
    """Comma-separated attacks, each applied to every prompt set (reported as SET+ATTACK): none, template (held-out jailbreak templates), past-tense (harmful requests asked about the past), prefill (the answer starts with 'Sure, here is')."""
    judge: str = ""
    """Comma-separated judges: learned, compliance, coherence, refusal, refusal-strict, best, judge:MODEL, guard:SPEC, llama-guard-3:PATH, shieldgemma:PATH, harmbench-cls:PATH (published classifiers); empty = learned,compliance,coherence (the refusal judges share the shipped probe's labelling rule)."""
    allow_guard_judge: bool = False
    """Allow a judge that is the decoding guard or shares its labels or features (the report marks it)."""
    guard: str = "latent-probe"
    """The guard methods may consult while decoding (also reports each answer's risk)."""
    reward: str = "relevance"
    """Task reward the methods select and rank by (best-of-n, beam-saute, the Lagrangian variant); each answer's value is reported as 'reward'. A name (relevance, repetition, coherence), a sum such as relevance+0.5*coherence, or module:attr."""
    budget: float | None = None
    """Safety budget d for the methods that keep a safety state (critic-search, beam-saute, learned-care): cost units an answer may spend (1: one flagged check); empty = each method's own (1)."""
    model: str = DEFAULT_MODEL
    """Policy model spec."""
    dtype: str = "auto"
    """The model's weights and activations: auto (float32 on the CPU, bfloat16 on a GPU), float32, bfloat16, float16. On a CPU with AMX (Intel Sapphire Rapids and later) bfloat16 decodes 1.1-1.7x as fast (bench/dtype.py: plain sampling 1.12x, CARE 1.65x, critic search 1.19x), with the answers no longer the same token for token; the shipped guard, critic and policy were trained in float32."""
    max_new_tokens: int = 64
    """Answer length at most."""
    temperature: float = 0.7
    """Sampling temperature of sampled methods."""
    top_p: float = 0.9
    """Nucleus mass of sampled methods."""
    seed: int = 0
    """Run seed (each answer's seed derives from it and its prompt)."""
    limit: int = 0
    """Use at most this many prompts per set (0 = all)."""
    out: str = "runs/eval"
    """Output folder: samples.jsonl, report.md, report.json, safety_quality.png."""
    restart: bool = False
    """When the model, guard or critic files changed since the samples in --out were made: set the old samples aside (samples.<time>.jsonl) and start again, instead of refusing."""
    rejudge: str = ""
    """Judge this samples file (JSONL with prompt, text or response, label) instead of decoding."""
    gold: str = ""
    """Gold file the judges' agreement is measured on (empty = the shipped one; its dev split is used)."""
    device: str = "cpu"
    """'cpu' or 'cuda'."""
    chunk: int = 32
    """Prompts per chunk: samples are saved after each one."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        super().__post_init__()
        resolve_dtype(self.dtype, torch.device("cpu"))  # an unknown name fails here, naming the choices
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = all), got {self.limit}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if not split_list(self.attack):
            raise ValueError("attack is empty; use none, or one or more of template, past-tense, prefill")
        for name in split_list(self.attack):
            get_attack(name)
        if self.budget is not None and not self.budget > 0:
            raise ValueError(f"budget must be > 0 (cost units an answer may spend), got {self.budget}")


def read_samples(path: Path) -> list[dict]:
    """Samples saved so far (a torn last line from an older writer is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def saved_config(out: Path) -> dict:
    """The ``config.json`` of an earlier run in ``out`` that left samples (``{}`` if none: a config
    without samples is from a run that failed before its first answer, and binds nothing)."""
    path = out / "config.json"
    if not path.is_file() or not (out / "samples.jsonl").is_file():
        return {}
    return read_json_file(path, "run config", f"move {str(out)!r} aside or give another --out")


def check_resume(out: Path, saved: dict, config: EvalConfig) -> None:
    """Refuse to mix samples made with other result-changing settings into one folder."""
    if saved:
        # a setting added after the samples were made was at its default then
        was = {k: saved.get(k, EvalConfig.__dataclass_fields__[k].default) for k in RESULT_FIELDS}
        diff = {k: (was[k], getattr(config, k)) for k in RESULT_FIELDS if was[k] != getattr(config, k)}
        if diff:
            raise ValueError(f"{out} holds samples made with other settings {diff}; use another --out or the same settings")


def check_files(out: Path, saved: dict, files: dict, config: EvalConfig) -> bool:
    """Refuse samples made with other model, guard or critic files; with ``restart``, return True:
    they are to be set aside (:func:`set_aside`) once the run has been checked."""
    from latentguard.evaluation.fingerprints import changed

    diff = changed(saved.get("files", {}), files)
    if diff and not config.restart:
        raise ValueError(f"{out} holds samples made with other files {diff} (retrained or replaced since); use another "
                         "--out, or --restart true to set the old samples aside and start again")
    return bool(diff)


def set_aside(out: Path) -> None:
    """Rename the samples in ``out`` to ``samples.<time>.jsonl``: a restarted run starts afresh."""
    samples = out / "samples.jsonl"
    if samples.exists():
        samples.rename(out / f"samples.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")


def stale_judgements(samples: list[dict], old: dict, panel: JudgePanel) -> None:
    """Drop the verdicts of judges whose fitted files or rule changed since they were made (in place)."""
    stale = [j.name for j in panel.judges if j.name in old and old[j.name] != j.fingerprint()]
    for row in samples:
        for name in stale:
            row.get("judgements", {}).pop(name, None)


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written."""

    methods: list[Method]
    sets: list[PromptSet]
    guard: Guard | None
    panel: JudgePanel
    marks: dict[str, dict[str, list[str]]]


def prepare(config: EvalConfig) -> Prepared:
    """Build and check every option; raises ``ValueError``/``FileNotFoundError`` naming a bad one."""
    methods = [make_method(spec) for spec in split_list(config.methods)]
    if not methods:
        raise ValueError("no method given; e.g. --methods vanilla,care")
    if config.budget is not None:
        budgeted = [m for m in methods if m.uses_budget]
        if not budgeted:
            raise ValueError(f"--budget {config.budget:g} applies to the methods that keep a safety state "
                             "(critic-search, beam-saute, learned-care); none of --methods does: drop --budget")
        for m in budgeted:
            resolve_budget(m.spec, m.budget_option, config.budget)
    make_reward(config.reward)  # a bad reward spec fails here, before anything is written
    sets: list[PromptSet] = [load_prompt_set(spec) for spec in split_list(config.prompts)]
    if not sets:
        raise ValueError("no prompt set given; e.g. --prompts default")
    if config.limit:
        for s in sets:
            s.records = s.records[: config.limit]
    sets = [attack_set(s, get_attack(name)) for s in sets for name in split_list(config.attack)]
    guard = make_guard(config.guard) if config.guard else None
    panel = build_panel(config.judge, config.guard or None, guard, config.gold,
                        guarded_methods=any(m.uses_guard for m in methods))
    marks = guard_conflicts(panel, [m.spec for m in methods if m.uses_guard], config.guard, config.allow_guard_judge)
    return Prepared(methods, sets, guard, panel, marks)


def score_rows(rollouts, records, method_spec: str, set_name: str, quality, guard) -> list[dict]:
    """Flatten one chunk of rollouts into sample rows with their task rewards and the run guard's
    risk (what needs the model; the judges run on the driver, :func:`judge_rows`)."""
    prompts = [r.prompt for r in rollouts]
    texts = [r.text for r in rollouts]
    relevance, repetition, reward = (np.asarray(q(prompts, texts)) for q in quality)
    risk = checked_risk(guard, prompts, texts)[0] if guard is not None else np.full(len(prompts), np.nan)
    rows = []
    for i, (rollout, record) in enumerate(zip(rollouts, records)):
        row = {"method": method_spec, "prompt_set": set_name, "label": record.label, "category": record.category,
               "lookalike": record.lookalike, **asdict(rollout)}
        if record.prefill or record.request:
            row["attack"] = {"request": record.request or record.prompt, "template": record.template,
                             "prefill": record.prefill}
        row["relevance"], row["repetition"], row["reward"] = float(relevance[i]), float(repetition[i]), float(reward[i])
        row["risk"] = None if np.isnan(risk[i]) else float(risk[i])
        row["flagged"] = None if guard is None else bool(violations(risk[i], guard.threshold))
        rows.append(row)
    return rows


def worker_state(config: dict) -> dict:
    """What a worker decodes with, built once per worker (in-process, or once per Ray actor): the
    model (on a GPU when the actor has one), the guard attached to it, the run context."""
    cfg = EvalConfig(**config)
    lm = load_lm(cfg.model, device=cfg.worker_device(cfg.device), dtype=cfg.dtype)
    guard = make_guard(cfg.guard) if cfg.guard else None
    if guard is not None:
        guard.attach(lm)
    reward = make_reward(cfg.reward)
    relevance = reward if isinstance(reward, RelevanceReward) else RelevanceReward()
    ctx = RunContext(lm, guard, reward, cfg.max_new_tokens, SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p),
                     cfg.seed, guard_spec=cfg.guard or None, budget=cfg.budget)
    return {"ctx": ctx, "guard": guard, "quality": (relevance, RepetitionReward(), reward), "methods": {}}


def run_chunk(state: dict, item: tuple) -> list[dict]:
    """Decode one chunk of prompts with one method and score it: ``item`` = (method spec, prompt set
    name, records). The same rows wherever it runs: every answer is seeded by the run seed and its
    prompt, and a chunk is the same batch in-process and on an actor."""
    spec, set_name, records = item
    if spec not in state["methods"]:
        state["methods"][spec] = make_method(spec)
    prefill = records[0].prefill if records else ""  # one attack per prompt set, so per chunk
    with state["ctx"].lm.prefilled(prefill):
        rollouts = state["methods"][spec].run([r.prompt for r in records], state["ctx"])
    if prefill:  # the answer as a reader sees the assistant's turn
        rollouts = [replace(r, text=after_prefill(prefill, r.text)) for r in rollouts]
    return score_rows(rollouts, records, spec, set_name, state["quality"], state["guard"])


def run_evaluation(config: EvalConfig) -> dict:
    """Run (or resume) the evaluation and write the report; returns the report dict."""
    from latentguard.evaluation.report import build_report, write_report

    if config.rejudge:
        raise ValueError("--rejudge judges a samples file without decoding: use latentguard.evaluation.rejudge.rejudge(config)")
    from latentguard.evaluation.fingerprints import run_fingerprints

    # Everything is built and checked before anything is written to --out: the options, the files
    # every method reads (guard, critic, policy: loaded for the model here, in-process), the folder.
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; give a folder (it is created if missing)")
    saved = saved_config(out)
    check_resume(out, saved, config)
    run = prepare(config)
    files = run_fingerprints(config, run.methods)
    restart = check_files(out, saved, files, config)
    samples_path = out / "samples.jsonl"
    samples = read_samples(samples_path) if saved and not restart else []
    done = {(s["method"], s["prompt_set"], s["prompt"]) for s in samples}
    todo = [(m, s, [r for r in s.records if (m.spec, s.name, r.prompt) not in done]) for m in run.methods for s in run.sets]
    total = sum(len(t[2]) for t in todo)
    local = None
    if config.distributed:  # reach the cluster (and check it can host the actors) before writing anything
        init_ray(config.worker_config())
    elif total:  # the model, the guard on it, and every method's files, checked against them
        local = worker_state(asdict(config))
        for method in run.methods:
            method.prepare(local["ctx"])
            local["methods"][method.spec] = method
    check_out_dir(out)  # a folder we can write, created if missing
    if restart:
        set_aside(out)
    atomic_write_json(out / "config.json", asdict(config) | {
        "files": files, "judges": {j.name: j.fingerprint() for j in run.panel.judges}})
    stale_judgements(samples, saved.get("judges", {}), run.panel)
    if total:
        items = [(m.spec, s.name, records[i : i + config.chunk]) for m, s, records in todo
                 for i in range(0, len(records), config.chunk)]  # (method, set, chunk), in prompt order
        pool = WorkerPool(partial(worker_state, asdict(config)), config.worker_config(), state=local)
        finished: dict[int, list[dict]] = {}
        bar = tqdm(total=total, desc="evaluate", unit="prompt", disable=not config.progress)
        ticked = [0]  # answers of the current chunk the bar has shown (in-process: as each one ends)

        def tick(n: int) -> None:
            ticked[0] += n
            bar.update(n)

        if local is not None:
            local["ctx"].on_answers = tick
        try:
            for index, rows in pool.imap(run_chunk, items):
                judge_rows(rows, run.panel)
                finished[index] = rows
                merged = samples + [row for i in sorted(finished) for row in finished[i]]  # prompt order
                atomic_write_text(samples_path, "".join(json.dumps(s) + "\n" for s in merged))
                bar.set_postfix_str(f"{items[index][0]} on {items[index][1]}")
                bar.update(max(0, len(rows) - ticked[0]))  # on Ray the chunk's answers arrive together
                ticked[0] = 0
        finally:
            pool.close()
            bar.close()
        samples = merged
    wanted = {(m.spec, s.name) for m in run.methods for s in run.sets}
    current = {(s.name, r.prompt) for s in run.sets for r in s.records}
    rows = [s for s in samples if (s["method"], s["prompt_set"]) in wanted and (s["prompt_set"], s["prompt"]) in current]
    missing = [r for r in rows if any(j.name not in r.get("judgements", {}) for j in run.panel.judges)]
    if missing:
        judge_rows(missing, run.panel)
        atomic_write_text(samples_path, "".join(json.dumps(s) + "\n" for s in samples))
    report = build_report(rows, asdict(config), run.panel, [s.name for s in run.sets], run.marks,
                          prompt_sets={s.name: s for s in run.sets})
    report["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(report, out)
    return report
