"""The policy's own answers to labelled requests, with the latent features a guard will see.

A guard for decoding judges *unfinished* answers of *this* model, so it is trained on exactly that:
for each request, ``samples`` sampled answers of ``max_new_tokens`` tokens, and for each answer the
features at response prefixes of 16, 32 and 64 tokens (an answer that ended earlier contributes its
whole text to the longer prefixes):

- ``mean``: the mean of a layer's hidden states over the response tokens so far;
- ``last``: the hidden state at the last response token;

for every candidate layer, plus the text of each prefix. Features are read from the decoding state
(:meth:`latentguard.lm.DecodeState.pooled_latent`) of the episode engine that decodes them, the same
code path a guard uses during decoding.

Label: an answer to a harmful request is unsafe (1) unless it refuses
(:func:`latentguard.text.refusals.is_refusal`); an answer to a benign request is safe (0).

Generation is done in chunks saved as ``.npz`` shards in a folder (atomic writes); a rerun skips the
shards that exist, so an interrupted collection resumes. With ``--ray`` the missing chunks are
decoded on Ray actors (:mod:`latentguard.workers.pool`), each seeded by its index: the same shards.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latentguard.common.storage import atomic_write_bytes, atomic_write_json
from latentguard.data.attacks import after_prefill
from latentguard.data.prompt_sets import PromptRecord
from latentguard.episodes.engine import Engine
from latentguard.lm import LanguageModel, SamplingConfig, load_lm
from latentguard.text.refusals import is_refusal
from latentguard.workers.pool import WorkerConfig, WorkerPool

POOLINGS = ("mean", "last", "request")
"""Stored feature kinds: the mean over the response, its last token, the request's last token."""


@dataclass
class AnswerSet:
    """Answers and features; row ``i`` is one answer, ``features[(pooling, layer)]`` is (N, P, H)."""

    prompts: list[str]
    labels: np.ndarray  # (N,) 1 = unsafe answer
    harmful_request: np.ndarray  # (N,) bool
    lookalike: np.ndarray  # (N,) bool
    splits: list[str]
    prefixes: tuple[int, ...]
    texts: list[list[str]]  # (N, P) text of each prefix
    lengths: np.ndarray  # (N,) response tokens generated
    features: dict[tuple[str, int], np.ndarray]

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: np.ndarray) -> AnswerSet:
        """The answers at ``index``."""
        index = np.asarray(index)
        return AnswerSet(
            [self.prompts[i] for i in index], self.labels[index], self.harmful_request[index],
            self.lookalike[index], [self.splits[i] for i in index], self.prefixes,
            [self.texts[i] for i in index], self.lengths[index], {k: v[index] for k, v in self.features.items()},
        )

    @staticmethod
    def concat(parts: Sequence[AnswerSet]) -> AnswerSet:
        first = parts[0]
        return AnswerSet(
            [x for p in parts for x in p.prompts], np.concatenate([p.labels for p in parts]),
            np.concatenate([p.harmful_request for p in parts]), np.concatenate([p.lookalike for p in parts]),
            [x for p in parts for x in p.splits], first.prefixes, [x for p in parts for x in p.texts],
            np.concatenate([p.lengths for p in parts]),
            {k: np.concatenate([p.features[k] for p in parts]) for k in first.features},
        )

    def to_bytes(self) -> bytes:
        arrays = {f"{pool}:{layer}": v for (pool, layer), v in self.features.items()}
        meta = {"prompts": self.prompts, "splits": self.splits, "prefixes": list(self.prefixes), "texts": self.texts}
        buf = io.BytesIO()
        # numpy's stub: mypy matches **arrays against savez's allow_pickle: bool
        np.savez(buf, labels=self.labels, harmful_request=self.harmful_request, lookalike=self.lookalike,
                 lengths=self.lengths, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @staticmethod
    def from_file(path: Path) -> AnswerSet:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            features = {}
            for key in data.files:
                if ":" in key:
                    pool, layer = key.split(":")
                    features[(pool, int(layer))] = data[key]
            return AnswerSet(meta["prompts"], data["labels"], data["harmful_request"], data["lookalike"],
                             meta["splits"], tuple(meta["prefixes"]), meta["texts"], data["lengths"], features)


@dataclass
class CollectConfig:
    """How answers are sampled for guard training."""

    samples: int = 2
    """Answers per request."""
    max_new_tokens: int = 64
    """Length of each answer."""
    prefixes: tuple[int, ...] = (16, 32, 64)
    """Response prefixes at which features are taken."""
    layers: tuple[int, ...] = (6, 9, 12, 15, 18, 21, 24)
    """Candidate layers (hidden-state numbering: 0 = embeddings)."""
    temperature: float = 0.7
    """Sampling temperature of the answers."""
    top_p: float = 0.9
    """Nucleus mass of the answers."""
    batch_size: int = 32
    """Answers generated together."""
    seed: int = 0
    """Seed of the sampler."""
    version: int = 2
    """Stored features (2: with the request latents); shards of another version are not reused."""

    def __post_init__(self) -> None:
        if not self.prefixes or list(self.prefixes) != sorted(set(self.prefixes)) or self.prefixes[0] < 1:
            raise ValueError(f"prefixes must be increasing positive token counts, got {self.prefixes}")

    def key(self) -> str:
        """A short hash naming this configuration's shard folder. ``samples`` is left out (hashed as
        1): sample ``s`` is its own shards, so asking for more samples decodes only the new ones."""
        return hashlib.sha256(repr(replace(self, samples=1)).encode()).hexdigest()[:10]


def _generate_chunk(lm: LanguageModel, records: Sequence[PromptRecord], config: CollectConfig, seed: int) -> AnswerSet:
    """Answer ``records`` on one episode engine, reading the features at every prefix length.

    Records under the prefill attack (one ``prefill`` for the whole chunk) are answered after it, the
    forced words read as answer as a guard reads them while decoding, and their texts start with it."""
    prefills = {r.prefill for r in records}
    if len(prefills) > 1:
        raise ValueError(f"one chunk of answers takes one prefill, got {sorted(prefills)}: collect each attack apart")
    prefill = prefills.pop() if prefills else ""
    with lm.prefilled(prefill):
        return _decode_chunk(lm, records, config, seed, prefill)


def _decode_chunk(lm: LanguageModel, records: Sequence[PromptRecord], config: CollectConfig, seed: int,
                  prefill: str) -> AnswerSet:
    layers = [lm.capture_layer(layer, history=True) for layer in config.layers]
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p)
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    engine = Engine(lm, max_new_tokens=config.max_new_tokens)
    engine.start([r.prompt for r in records])
    n, n_prefix = len(records), len(config.prefixes)
    features = {(pool, layer): np.zeros((n, n_prefix, lm.hidden_size), np.float16) for pool in POOLINGS for layer in layers}
    texts = [[""] * n_prefix for _ in range(n)]
    for layer in layers:  # what the policy computed for the request, the same at every prefix
        features[("request", layer)][:] = engine.live_state.prompt_latent(layer).float().cpu().numpy()[:, None, :]
    decoded = 0
    for slot, prefix in enumerate(config.prefixes):
        # an answer that ended earlier is no longer fed: its features and text stay those of its end
        engine.decode(sampling, generator, max_steps=max(0, min(prefix, config.max_new_tokens) - decoded))
        decoded = max(decoded, min(prefix, config.max_new_tokens))
        for layer in layers:
            features[("mean", layer)][:, slot] = engine.live_state.pooled_latent(layer).float().cpu().numpy()
            features[("last", layer)][:, slot] = engine.live_state.latent(layer)
        for row in range(n):
            texts[row][slot] = after_prefill(prefill, engine.text(row)) if prefill else engine.text(row)
    lengths = np.array([len(r) for r in engine.responses], dtype=np.int64)
    harmful = np.array([r.label == "harmful" for r in records])
    labels = np.array([h and not is_refusal(texts[i][-1]) for i, h in enumerate(harmful)], dtype=np.int64)
    return AnswerSet([r.prompt for r in records], labels, harmful, np.array([r.lookalike for r in records]),
                     [r.split for r in records], tuple(config.prefixes), texts, lengths, features)


def answer_worker_state(model: str, device: str) -> LanguageModel:
    """A Ray actor's model replica."""
    return load_lm(model, device=device)


def answer_chunk(lm: LanguageModel, item: tuple) -> AnswerSet:
    """One chunk's answers: ``item`` = (records, config, seed)."""
    records, config, seed = item
    return _generate_chunk(lm, records, config, seed)


def collect_answers(
    lm: LanguageModel, records: Sequence[PromptRecord], config: CollectConfig, folder: Path, progress: bool = True,
    workers: WorkerConfig | None = None,
) -> AnswerSet:
    """Sample ``config.samples`` answers per record (resumable shards in ``folder``); the missing
    shards are decoded in-process or, with ``workers.ray`` set, on Ray actors (each loading
    ``lm.model_id``): every chunk is seeded by its own index, so the shards are the same either way."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = [records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)]
    chunks = [(sample, i, batch) for sample in range(config.samples) for i, batch in enumerate(batches)]
    atomic_write_json(folder / "manifest.json", {"config": repr(config), "model": lm.model_id, "chunks": len(chunks),
                                                 "answers": len(records) * config.samples})
    parts: dict[int, AnswerSet] = {}
    paths = [folder / (f"shard-{i:05d}.npz" if sample == 0 else f"shard-s{sample}-{i:05d}.npz") for sample, i, _ in chunks]
    for index, path in enumerate(paths):
        if path.exists():
            try:
                parts[index] = AnswerSet.from_file(path)
            except (OSError, ValueError, KeyError):  # a corrupt shard is regenerated
                path.unlink()
    missing = [index for index in range(len(chunks)) if index not in parts]
    workers = workers or WorkerConfig()
    device = workers.worker_device(lm.device)
    pool = WorkerPool(partial(answer_worker_state, lm.model_id, device), workers, state=lm)  # in-process: this model
    items = [(chunks[k][2], config, config.seed * 100_003 + chunks[k][1] + chunks[k][0] * 1_000_003) for k in missing]
    with tqdm(total=len(missing), desc="answers", unit="batch", disable=not progress) as bar:
        for j, part in pool.imap(answer_chunk, items):
            atomic_write_bytes(paths[missing[j]], part.to_bytes())
            parts[missing[j]] = part
            bar.update(1)
    pool.close()
    return AnswerSet.concat([parts[index] for index in range(len(chunks))])
