"""Guarded rollouts on prompt sets -> per-answer samples -> metrics (the library behind evaluate.py).

For every method x prompt set x prompt the run stores one sample (``samples.jsonl``): the released
text, the method's costs (tokens, wall time, wait tokens, interventions, guard calls), each judge's
verdict, the task rewards (``relevance``, ``repetition``) and the run guard's risk of the released
text. Samples are written atomically after every chunk of prompts; a rerun with the same ``--out``
skips what is done, so an interrupted run loses nothing already written. The report is computed
from all samples of the methods and prompt sets asked for.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from agents.base import RunContext
from agents.judges import Judge, make_judge
from agents.registry import make_method
from envs.guards import make_guard
from envs.lm import DEFAULT_MODEL, SamplingConfig, load_lm
from envs.prompt_sets import PromptSet, load_prompt_set
from envs.rewards import RelevanceReward, RepetitionReward
from envs.storage import atomic_write_json, atomic_write_text

# settings that change what a sample contains: a resumed run must agree on them
RESULT_FIELDS = ("model", "guard", "max_new_tokens", "temperature", "top_p", "seed")


@dataclass
class EvalConfig:
    """Run decoding methods over prompt sets and report safety, quality and speed."""

    methods: str = "vanilla,best-of-n,beam:k=2,care"
    """Comma-separated method specs (name or name:key=value, e.g. best-of-n:n=8)."""
    prompts: str = "default"
    """Comma-separated prompt sets: default, advbench[:split], benign[:split], builtin, or a .jsonl/.csv/.txt file."""
    judge: str = "refusal,refusal-strict"
    """Comma-separated judges: refusal, refusal-strict, guard:SPEC."""
    guard: str = "latent-probe"
    """The guard methods may consult while decoding (also reports each answer's risk)."""
    model: str = DEFAULT_MODEL
    """Policy model spec."""
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
    device: str = "cpu"
    """'cpu' or 'cuda'."""
    chunk: int = 16
    """Prompts per chunk: samples are saved after each one."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = all), got {self.limit}")


def split_list(text: str) -> list[str]:
    """Comma-separated items, commas inside parentheses kept (``max(a,b)``)."""
    from envs.guards.composite import split_top_level

    return split_top_level(text)


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


def check_resume(out: Path, config: EvalConfig) -> None:
    """Refuse to mix samples made with other result-changing settings into one folder."""
    saved = out / "config.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        diff = {k: (old.get(k), getattr(config, k)) for k in RESULT_FIELDS if old.get(k) != getattr(config, k)}
        if diff:
            raise ValueError(f"{out} holds samples made with other settings {diff}; use another --out or the same settings")


def warnings_for(config: EvalConfig, judges: list[Judge]) -> list[str]:
    out = []
    for judge in judges:
        if judge.guard_spec is not None and judge.guard_spec.strip() == config.guard.strip():
            out.append(f"WARNING: judge {judge.name!r} is the decoding guard {config.guard!r}: methods that use the "
                       "guard are graded by it, so their harmful rate under this judge is not an independent measure")
    return out


def evaluate_samples(rollouts, records, method_spec: str, set_name: str, judges, quality, guard) -> list[dict]:
    """Judge, score and flatten one chunk of rollouts into sample rows."""
    prompts = [r.prompt for r in rollouts]
    texts = [r.text for r in rollouts]
    verdicts = {j.name: j.judge(prompts, texts) for j in judges}
    relevance, repetition = (np.asarray(q(prompts, texts)) for q in quality)
    risk = np.asarray(guard.score(prompts, texts)) if guard is not None else np.full(len(prompts), np.nan)
    rows = []
    for i, (rollout, record) in enumerate(zip(rollouts, records)):
        row = {"method": method_spec, "prompt_set": set_name, "label": record.label, "category": record.category,
               "lookalike": record.lookalike, **asdict(rollout)}
        row["judgements"] = {name: {"harmful": bool(h[i]), "refused": None if r is None else bool(r[i])}
                             for name, (h, r) in verdicts.items()}
        row["relevance"], row["repetition"] = float(relevance[i]), float(repetition[i])
        row["risk"] = None if np.isnan(risk[i]) else float(risk[i])
        row["flagged"] = None if guard is None else bool(risk[i] >= guard.threshold)
        rows.append(row)
    return rows


def run_evaluation(config: EvalConfig) -> dict:
    """Run (or resume) the evaluation and write the report; returns the report dict."""
    from agents.report import build_report, write_report

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    check_resume(out, config)
    methods = [make_method(spec) for spec in split_list(config.methods)]
    sets: list[PromptSet] = [load_prompt_set(spec) for spec in split_list(config.prompts)]
    if config.limit:
        for s in sets:
            s.records = s.records[: config.limit]
    judges = [make_judge(spec) for spec in split_list(config.judge)]
    warnings = warnings_for(config, judges)
    for w in warnings:
        print(w)
    atomic_write_json(out / "config.json", asdict(config))

    samples_path = out / "samples.jsonl"
    samples = read_samples(samples_path)
    done = {(s["method"], s["prompt_set"], s["prompt"]) for s in samples}
    todo = [(m, s, [r for r in s.records if (m.spec, s.name, r.prompt) not in done]) for m in methods for s in sets]
    total = sum(len(t[2]) for t in todo)
    if total:
        lm = load_lm(config.model, device=config.device)
        guard = make_guard(config.guard) if config.guard else None
        if guard is not None:
            guard.attach(lm)
        ctx = RunContext(lm, guard, RelevanceReward(), config.max_new_tokens,
                         SamplingConfig(temperature=config.temperature, top_p=config.top_p), config.seed)
        quality = (ctx.reward, RepetitionReward())
        bar = tqdm(total=total, desc="evaluate", unit="prompt", disable=not config.progress)
        for method, prompt_set, records in todo:
            for start in range(0, len(records), config.chunk):
                chunk = records[start : start + config.chunk]
                bar.set_postfix_str(f"{method.spec} on {prompt_set.name}")
                rollouts = method.run([r.prompt for r in chunk], ctx)
                samples += evaluate_samples(rollouts, chunk, method.spec, prompt_set.name, judges, quality, guard)
                atomic_write_text(samples_path, "".join(json.dumps(s) + "\n" for s in samples))
                bar.update(len(chunk))
        bar.close()
    wanted = {(m.spec, s.name) for m in methods for s in sets}
    report = build_report([s for s in samples if (s["method"], s["prompt_set"]) in wanted], config, judges, sets, warnings)
    report["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(report, out)
    return report
