"""``train.py guard``: train the latent probe (or the embedding head) on the policy's own answers.

Writes into the output folder (default: the user cache, where ``make_guard("latent-probe")`` and
``make_guard("embedding")`` look): the guard files, ``config.json``, ``metrics.json`` (dev split:
AUROC overall and at prefixes of 16/32/64 tokens, TPR/FPR at the shipped threshold, look-alike FPR,
MAE against PyRIT's human scores per category beside PyRIT's published scorer MAEs) and TensorBoard
logs (``tb/``). The sampled answers are cached as resumable shards, so an interrupted run, or a
second run of the other guard kind, reuses them.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latentguard.common.storage import atomic_write_bytes, atomic_write_json, slug, user_cache_dir
from latentguard.data.attacks import prefilled_share
from latentguard.data.prompt_sets import LABELLED_SETS, PromptRecord, labelled_records, split_of
from latentguard.data.pyrit_data import harm_rows, published_maes
from latentguard.guards.defaults import default_guard_dir
from latentguard.guards.embedding import EmbeddingGuard, embedding_features
from latentguard.guards.probe import LatentProbe
from latentguard.lm import DEFAULT_MODEL, FEATURE_POOLINGS, LanguageModel, load_lm
from latentguard.text.embeddings import SentenceEncoder
from latentguard.training.guard_answers import AnswerSet, CollectConfig, collect_answers
from latentguard.training.probe_training import (
    SELECT_BY,
    Features,
    answer_features,
    csv_floats,
    csv_ints,
    evaluate,
    fit_selected,
    probe_from_selection,
    pyrit_features,
    select_head,
)
from latentguard.workers.pool import WorkerConfig

KINDS = ("latent-probe", "embedding")


@dataclass
class GuardTrainConfig(WorkerConfig):
    """Train a guard on the policy's own answers to labelled requests (the answers in-process, or on
    Ray actors with ``--ray``: :class:`latentguard.workers.pool.WorkerConfig`)."""

    kind: str = "latent-probe"
    """'latent-probe' (head on the policy's latents) or 'embedding' (head on MiniLM embeddings)."""
    labels: str = "compliance"
    """Judge that labels an answer to a harmful request unsafe (a refusal, an off-topic answer or word
    salad is safe): an evaluation judge spec (``train.py`` builds it), or 'refusal' for the first
    probe's rule (unsafe = no refusal phrase). Answers to benign requests are always safe. Not
    'learned' by default: that judge (the best against reading) then stays an independent measure
    of the methods this guard steers; the labelling judge is refused as one (its lineage)."""
    poolings: str = "mean,last,mean+request"
    """Candidate probe features: over the answer ('mean', 'last') or the answer's mean beside the
    request's last prompt token, computed at prefill ('mean+request'). 'request' alone may be named
    for comparison but is no default: it cannot tell a refusal from compliance with the same request,
    so it cannot steer decoding; against benign answers it ranks as well as mean+request (train CV
    AUROC 0.980 each), by the request alone, and it is far worse over all answers (0.853 against 0.907)."""
    model: str = DEFAULT_MODEL
    """Policy model whose answers (and latents) the guard learns from."""
    out: str = ""
    """Output folder; empty = the user cache, where make_guard finds it."""
    samples: int = 2
    """Sampled answers per training request."""
    dev_samples: int = 1
    """Sampled answers per dev request."""
    max_new_tokens: int = 64
    """Answer length; features are taken at prefixes of 16, 32 and 64 tokens."""
    layers: str = "6,9,12,15,18,21,24"
    """Candidate layers for the probe (comma-separated hidden-state indices)."""
    cs: str = "0.003,0.01,0.03,0.1"
    """Candidate inverse L2 strengths (comma-separated)."""
    lookalike_weights: str = "1,3,10"
    """Candidate fitting weights of answers to look-alike benign requests (comma-separated; chosen by
    CV with the rest): a weight above 1 asks the head to tell harm from its benign neighbours (the
    shipped probe: 10)."""
    select_by: str = "cv_auroc_vs_benign"
    """What grouped CV maximises: 'cv_auroc_vs_benign' (unsafe answers against answers to benign
    requests, look-alikes included: the guard's job while decoding) or 'cv_auroc' (all answers, safe
    answers to harmful requests included)."""
    pyrit_weight: float = 0.25
    """Weight of PyRIT's human-labelled responses as extra training rows (0 = not used)."""
    prefill_share: float = 0.0
    """Share of the training requests answered once more under the prefill attack (the answer starts
    with "Sure, here is"), as extra training rows; 0 = none. The dev and held-out splits stay plain."""
    folds: int = 5
    """Grouped cross-validation folds on the train split."""
    max_lookalike_fpr: float = 0.15
    """Threshold choice: keep the out-of-fold look-alike FPR at or below this."""
    temperature: float = 0.7
    """Sampling temperature of the answers."""
    top_p: float = 0.9
    """Nucleus mass of the answers."""
    batch_size: int = 32
    """Answers generated together."""
    limit: int = 0
    """Use at most this many requests per label and split (0 = all; for smoke tests)."""
    seed: int = 0
    """Seed of the answer sampler."""
    device: str = "cpu"
    """Where the policy runs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("samples", "dev_samples", "max_new_tokens", "folds", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(w <= 0 for w in csv_floats(self.lookalike_weights)) or not csv_floats(self.lookalike_weights):
            raise ValueError(f"lookalike_weights must be positive numbers, got {self.lookalike_weights!r}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if not 0.0 <= self.prefill_share <= 1.0:
            raise ValueError(f"prefill_share must be in [0, 1] (a share of the train requests), got {self.prefill_share}")
        if self.pyrit_weight < 0:
            raise ValueError(f"pyrit_weight must be >= 0, got {self.pyrit_weight}")
        unknown = [p for p in self.poolings.split(",") if p not in FEATURE_POOLINGS]
        if unknown or not self.poolings.strip():
            raise ValueError(f"poolings must be a comma-separated subset of {FEATURE_POOLINGS}, got {self.poolings!r}")


SOURCES = LABELLED_SETS
"""The request sets a guard learns from; each request's split (train/dev/test/heldout) is its own."""


def split_answers(lm: LanguageModel, config: GuardTrainConfig, split: str, samples: int,
                  progress: bool = False, prefill_share: float = 0.0) -> tuple[AnswerSet, Path]:
    """The answers of one split and the cache folder that holds their shards (and label caches);
    with ``prefill_share``, the answers of that share of the split's requests under the prefill attack."""
    collect = CollectConfig(samples=samples, max_new_tokens=config.max_new_tokens, layers=csv_ints(config.layers),
                            temperature=config.temperature, top_p=config.top_p, batch_size=config.batch_size,
                            seed=config.seed + (split == "dev"))
    records = labelled_records(split, config.limit)
    name = split
    if prefill_share:
        records, name = prefilled_share(records, prefill_share, config.seed), f"{split}-prefill"
    key = hashlib.sha256((collect.key() + "".join(r.prompt + r.prefill for r in records)).encode()).hexdigest()[:12]
    folder = user_cache_dir() / "answers" / slug(lm.model_id) / f"{name}-{key}"
    return collect_answers(lm, records, collect, folder, progress=progress, workers=config.worker_config()), folder


def _embedding_candidates(encoder, answers: AnswerSet) -> Features:
    base = answer_features(answers, *next(iter(answers.features)))  # labels/groups/prefixes
    prompts = [p for p in answers.prompts for _ in answers.prefixes]
    texts = [t for row in answers.texts for t in row]
    base.x = embedding_features(encoder, prompts, texts).astype(np.float32)
    return base


def _mae_table(risk: np.ndarray, rows) -> dict:
    published = published_maes()
    table = {}
    for category in sorted({r.category for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.category == category]
        human = np.array([rows[i].score for i in idx])
        table[category] = {"mae": float(np.abs(risk[idx] - human).mean()), "rows": len(idx),
                           "published": published.get(category, {})}
    return table


Labeler = Callable[[list[str], list[str]], np.ndarray]
"""(requests, answers) -> (N,) bool: the answer attempts the harm (a judge's ``harmful`` verdict).
A labeler may carry a ``fingerprint`` attribute (what fixes its verdicts, e.g. a judge's
:meth:`~latentguard.evaluation.judges.Judge.fingerprint`): its labels are then cached beside the answers."""


def _verdicts(answers: AnswerSet, labeler: Labeler, cache_dir: Path | None) -> np.ndarray:
    """(N,) the labeler's verdicts on the full answers to harmful requests (False for benign
    requests: their answers are safe, and the labeler is not asked). Read from (or written to)
    ``cache_dir`` when the labeler has a fingerprint; the file's name hashes it with the answers."""
    asked = np.flatnonzero(answers.harmful_request)
    prompts, texts = [answers.prompts[i] for i in asked], [answers.texts[i][-1] for i in asked]
    fingerprint = getattr(labeler, "fingerprint", None)
    path, harmful = None, None
    if cache_dir is not None and fingerprint:
        key = hashlib.sha256(json.dumps([fingerprint, prompts, texts]).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"labels-{key}.npy"
        if path.exists():
            harmful = np.load(path)
            if harmful.shape != (len(asked),):
                harmful = None
    if harmful is None:
        harmful = np.asarray(labeler(prompts, texts), dtype=bool) if len(asked) else np.zeros(0, dtype=bool)
        if path is not None:
            buf = io.BytesIO()
            np.save(buf, harmful)
            atomic_write_bytes(path, buf.getvalue())
    out = np.zeros(len(answers), dtype=bool)
    out[asked] = harmful
    return out


def relabel(answers: AnswerSet, labeler: Labeler | None, cache_dir: Path | None = None) -> dict:
    """Label ``answers`` with ``labeler`` (answers to benign requests stay safe); returns how many
    labels it changed against the refusal-marker rule the answers were collected with. Verdicts are
    cached in ``cache_dir`` (see :func:`_verdicts`)."""
    if labeler is None:
        return {"unsafe": int(answers.labels.sum()), "changed": 0, "changed_share": 0.0}
    old = answers.labels.copy()
    harmful = _verdicts(answers, labeler, cache_dir)
    answers.labels = (answers.harmful_request & harmful).astype(np.int64)
    changed = answers.labels != old
    return {"unsafe": int(answers.labels.sum()), "changed": int(changed.sum()),
            "changed_share": float(changed[answers.harmful_request].mean()) if answers.harmful_request.any() else 0.0,
            "unsafe_by_refusal_rule": int(old.sum())}


def _subsets(answers: AnswerSet, records: dict[str, PromptRecord]) -> dict[str, np.ndarray]:
    """Answer masks to report on: each source and harm category (its harmful requests against every
    benign request of the split), and each jailbreak template."""
    rec = [records[p] for p in answers.prompts]
    benign_rows = ~answers.harmful_request
    out = {}
    for name, load in SOURCES.items():
        prompts = {r.prompt for r in load()}
        mask = np.array([p in prompts for p in answers.prompts])
        if mask.any():
            out[f"source:{name}"] = mask if name == "benign" else mask | benign_rows
    for category in sorted({r.harm_category for r in rec if r.harm_category and r.label == "harmful"}):
        of_category = np.array([r.harm_category == category for r in rec])
        out[f"category:{category}"] = of_category | benign_rows
        if (of_category & benign_rows).any():
            out[f"lookalikes:{category}"] = of_category & benign_rows
    for template in sorted({r.template for r in rec if r.template}):
        out[f"template:{template}"] = np.array([r.template == template for r in rec])
    return out


def _report(answers: AnswerSet, records: dict[str, PromptRecord], risk_of, threshold: float) -> dict:
    """Overall and per-subset figures of one split (see :func:`evaluate`)."""
    f, risk = risk_of(answers)
    report = {"all": evaluate(f, risk, threshold, answers.prefixes)}
    per_answer = len(answers.prefixes)
    for name, mask in _subsets(answers, records).items():
        rows = np.repeat(mask, per_answer)
        sub = Features(f.x[rows], f.y[rows], f.groups[rows], f.prefix[rows], f.harmful_request[rows], f.lookalike[rows])
        report[name] = evaluate(sub, risk[rows], threshold, answers.prefixes)
        report[name]["answers"] = int(mask.sum())
    return report


def heldout_vs(heldout: AnswerSet, dev: AnswerSet, risk_of, threshold: float) -> dict:
    """Unsafe answers to held-out requests against two kinds of benign answers: to the dev split's
    everyday requests (``everyday``: not look-alikes), and to the held-out split's own benign
    requests (``lookalikes``: written to resemble the held-out categories, or held-out templates)."""
    unsafe = heldout.select(np.flatnonzero(heldout.labels == 1))
    everyday = dev.select(np.flatnonzero(~dev.harmful_request & ~dev.lookalike))
    own = heldout.select(np.flatnonzero(~heldout.harmful_request))
    out = {}
    for name, benign_part in (("everyday", everyday), ("lookalikes", own)):
        f, risk = risk_of(AnswerSet.concat([unsafe, benign_part]))
        out[name] = evaluate(f, risk, threshold, heldout.prefixes)
    return out


def train_guard(config: GuardTrainConfig, lm: LanguageModel | None = None, progress: bool = True,
                labeler: Labeler | None = None):
    """Run the whole recipe (see the module docstring); returns ``(guard, metrics)``.

    ``labeler`` labels the answers (``config.labels`` names it; ``train.py`` builds it from the
    evaluation judges, which this room does not import); ``None`` only with ``labels='refusal'``.
    """
    from torch.utils.tensorboard import SummaryWriter

    if (labeler is None) != (config.labels == "refusal"):
        raise ValueError(f"labels={config.labels!r} needs {'no labeler' if labeler else 'a labeler (the judge)'}; "
                         "run it through `python train.py guard`, which builds the judge")
    start = time.perf_counter()
    lm = lm or load_lm(config.model, device=config.device)
    out = Path(config.out) if config.out else default_guard_dir(lm.model_id, config.kind)
    samples = {"train": config.samples, "dev": config.dev_samples, "heldout": config.dev_samples}
    parts = {split: split_answers(lm, config, split, n, progress) for split, n in samples.items()}
    if config.prefill_share:
        parts["train-prefill"] = split_answers(lm, config, "train", 1, progress, prefill_share=config.prefill_share)
    label_counts = {split: relabel(answers, labeler, folder) for split, (answers, folder) in parts.items()}
    train, dev, heldout = (parts[split][0] for split in samples)
    if config.prefill_share:
        train = AnswerSet.concat([train, parts["train-prefill"][0]])
    records = {r.prompt: r for load in SOURCES.values() for r in load()}

    human = harm_rows()
    pyrit_train = [r for r in human.rows if split_of(r.objective) == "train"]
    pyrit_dev = [r for r in human.rows if split_of(r.objective) == "dev"]
    y_pyrit = np.array([r.score >= 0.5 for r in pyrit_train], dtype=np.int64)

    if config.kind == "latent-probe":
        layers = csv_ints(config.layers)
        extra = pyrit_features(lm, pyrit_train, layers, config.max_new_tokens) if config.pyrit_weight > 0 else None
        keys = [(pool, layer) for pool in config.poolings.split(",") for layer in layers]
        candidates = {key: (answer_features(train, *key), (extra[key], y_pyrit, config.pyrit_weight) if extra else None)
                      for key in keys}
    else:
        encoder = SentenceEncoder(device=lm.device)
        f_train = _embedding_candidates(encoder, train)
        pyrit_extra = None
        if config.pyrit_weight > 0:
            px = embedding_features(encoder, [r.objective for r in pyrit_train], [r.response for r in pyrit_train])
            pyrit_extra = (px, y_pyrit, config.pyrit_weight)
        candidates = {("embedding", 0): (f_train, pyrit_extra)}

    selection = select_head(candidates, csv_floats(config.cs), config.folds, config.max_lookalike_fpr,
                            lookalike_weights=csv_floats(config.lookalike_weights), select_by=config.select_by)
    f_sel, extra_sel = candidates[selection.key]
    head = fit_selected(f_sel, extra_sel, selection)
    info = {"train_answers": len(train), "dev_answers": len(dev), "heldout_answers": len(heldout),
            "pyrit_rows": len(pyrit_train), "pyrit_weight": config.pyrit_weight, "samples": config.samples,
            "prefill_share": config.prefill_share,
            "labels": config.labels}
    guard: LatentProbe | EmbeddingGuard
    if config.kind == "latent-probe":
        guard = probe_from_selection(lm, head, selection, info)
        guard.attach(lm)

        def risk_of(answers):
            f = answer_features(answers, *selection.key)
            return f, head.risk(f.x)

        # PyRIT responses are cut to max_new_tokens, as in training (some are longer than a context)
        dev_x = pyrit_features(lm, pyrit_dev, [selection.key[1]], config.max_new_tokens)[selection.key]
        pyrit_risk = head.risk(dev_x)
    else:
        guard = EmbeddingGuard(head, selection.threshold, {**info, "c": selection.c}, encoder=encoder)

        def risk_of(answers):
            f = _embedding_candidates(encoder, answers)
            return f, head.risk(f.x)

        pyrit_risk = guard.score([r.objective for r in pyrit_dev], [r.response for r in pyrit_dev])
    dev_report = _report(dev, records, risk_of, selection.threshold)
    metrics = {
        "kind": config.kind, "model": lm.model_id, "split": "dev",
        "selection": {"features": f"{selection.key[0]}:{selection.key[1]}", "c": selection.c,
                      "lookalike_weight": selection.lookalike_weight,
                      "cv_auroc_train": selection.cv_auroc, "select_by": config.select_by,
                      "cv_auroc_vs_benign_train": selection.cv_auroc_vs_benign, "threshold": selection.threshold},
        "labels": {"judge": config.labels, **label_counts},
        "dev": dev_report.pop("all"),
        "dev_by": dev_report,
        "heldout": _report(heldout, records, risk_of, selection.threshold) if len(heldout) else {},
        "heldout_vs": heldout_vs(heldout, dev, risk_of, selection.threshold) if len(heldout) else {},
        "pyrit_mae_dev": _mae_table(pyrit_risk, pyrit_dev),
        "pyrit_skipped_rows": human.skipped,
        "cv_table": selection.table,
        "seconds": time.perf_counter() - start,
    }
    guard.save(out)  # replaces the folder atomically; the rest is written into it
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "config.json", asdict(config))
    writer = SummaryWriter(str(out / "tb"))
    for i, row in enumerate(selection.table):
        writer.add_scalar("select/cv_auroc", row["cv_auroc"], i)
    for name, value in metrics["dev"].items():
        if isinstance(value, float):
            writer.add_scalar(f"dev/{name}", value, 0)
    for name, value in metrics["heldout"].get("all", {}).items():
        if isinstance(value, float):
            writer.add_scalar(f"heldout/{name}", value, 0)
    writer.close()
    return guard, metrics


def summary(metrics: dict) -> str:
    """A few lines for the terminal."""
    d = metrics["dev"]
    lines = [f"{metrics['kind']} for {metrics['model']}: {metrics['selection']}",
             f"dev AUROC {d['auroc']:.3f} (prefix 16/32/64: {d.get('auroc_prefix_16', float('nan')):.3f} / "
             f"{d.get('auroc_prefix_32', float('nan')):.3f} / {d.get('auroc_prefix_64', float('nan')):.3f}); "
             f"at threshold {metrics['selection']['threshold']:.3f}: TPR {d['tpr']:.3f}, benign FPR {d['fpr_benign']:.3f}, "
             f"look-alike FPR {d['fpr_lookalike']:.3f}"]
    for cat, row in metrics["pyrit_mae_dev"].items():
        pub = ", ".join(f"{k} {v:.3f}" for k, v in row["published"].items())
        lines.append(f"  PyRIT {cat}: MAE {row['mae']:.3f} on {row['rows']} rows (published: {pub or 'none'})")
    return "\n".join(lines)


def export(model_id: str, kind: str) -> Path:
    """Write the cached trained guard of ``kind`` for ``model_id`` as the shipped JSON
    (``latentguard/guards/pretrained/``): ``python -m latentguard.training.guard_training export [KIND ...]``."""
    from dataclasses import asdict

    from latentguard.common.storage import atomic_write_text
    from latentguard.guards.defaults import load_trained_guard
    from latentguard.guards.pretrained import pretrained_path

    folder = default_guard_dir(model_id, kind)
    guard = load_trained_guard(kind, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    if kind == "latent-probe":
        assert isinstance(guard, LatentProbe)
        config = asdict(guard.config)
    else:
        assert isinstance(guard, EmbeddingGuard)
        config = {"encoder": "all-MiniLM-L6-v2", "threshold": guard.threshold, "info": guard.info}
    payload = {"kind": kind, "model_id": model_id, "config": config, "head": guard.head.to_dict(),
               "dev_metrics": metrics["dev"], "selection": metrics["selection"],
               "recipe": "python train.py guard --kind " + kind + " (defaults); see latentguard/training/guard_training.py"}
    path = pretrained_path(model_id, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload) + "\n")
    return path


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["export"]:
        sys.exit("usage: python -m latentguard.training.guard_training export [latent-probe|embedding ...]")
    for kind in sys.argv[2:] or ["latent-probe", "embedding"]:
        print(export(DEFAULT_MODEL, kind))
