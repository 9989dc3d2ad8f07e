"""A sequence-classifier guard: any ``AutoModelForSequenceClassification`` (toxicity, harm ...).

The classifier reads ``(prompt, response)`` as a text pair (``pair=True``) or the response alone,
and the risk is the probability of its unsafe labels:

- ``unsafe_labels`` given: the sum of their softmax probabilities (names from ``config.id2label``);
- ``unsafe_labels=None``: a 1-logit model's sigmoid, or label 1's probability for a 2-label model;
  with more labels you must name the unsafe ones;
- a multi-label model (``config.problem_type == "multi_label_classification"``, independent
  sigmoids, e.g. toxicity heads with ``toxic``, ``threat``, ``insult`` ...): the largest sigmoid
  among the unsafe labels (a sum of independent probabilities could pass 1).

``make_guard("classifier:/path/to/folder")`` or ``make_guard("classifier:org/name")``; a hub id is
the only spec that downloads anything. Rows are right-padded (what encoders expect; decoder
classifiers find their last real token from ``config.pad_token_id``, which is set from the
tokenizer when the checkpoint lacks it) and truncated to ``max_length`` tokens. A row with no
token at all (an empty response with ``pair=False`` and a tokenizer that adds no special tokens)
has nothing to classify and gets risk 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from latentguard.common.hf import quiet_loading
from latentguard.guards.base import Guard, check_model_guard_options, check_risk
from latentguard.lm.loading import ensure_pad_token, load_failure, resolve_device, resolve_dtype, resolve_model


def load_classifier(model: str, device: torch.device, dtype: torch.dtype):
    """Load ``(model, tokenizer)`` of a sequence classifier from a local folder or a hub id."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(model)
    if source.kind not in ("local", "hub"):
        raise ValueError(
            f"a classifier guard needs a local model folder or a hub id, got {model!r} (a {source.kind} "
            f"causal LM); use 'judge:{model}' to judge with a generative model"
        )
    try:
        if source.kind == "local" and not os.path.isfile(os.path.join(source.location, "config.json")):
            raise OSError(f"{source.location} has no config.json")
        config = AutoConfig.from_pretrained(source.location)
        architectures = list(getattr(config, "architectures", None) or [])
        if architectures and not any("SequenceClassification" in a for a in architectures):
            raise ValueError(
                f"model {model!r} is a {architectures[0]}, not a sequence classifier (its head would be "
                f"random); use 'judge:{model}' for a generative guard model"
            )
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source.location)
            classifier = AutoModelForSequenceClassification.from_pretrained(source.location, dtype=dtype)
    except OSError as err:
        raise load_failure("classifier", model, source.kind, source.location, err, "pass a local folder") from err
    ensure_pad_token(tokenizer, model)
    if classifier.config.pad_token_id is None:  # decoder classifiers need it to find the last real token
        classifier.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    classifier.to(device=device, dtype=dtype)
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier, tokenizer


def unsafe_label_ids(config, unsafe_labels: Sequence[str] | None, model: str) -> list[int]:
    """Indices of the unsafe labels (see the module docstring for the default)."""
    num_labels = int(config.num_labels)
    names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(num_labels)]
    if unsafe_labels is None:
        if num_labels <= 2:
            return [num_labels - 1]
        raise ValueError(
            f"classifier {model!r} has {num_labels} labels {names}; say which are unsafe with unsafe_labels=..."
        )
    if isinstance(unsafe_labels, str):
        unsafe_labels = (unsafe_labels,)
    if not unsafe_labels:
        raise ValueError(f"unsafe_labels is empty; name at least one of {names}")
    unknown = [label for label in unsafe_labels if label not in names]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown} for classifier {model!r}; its labels are {names}")
    return sorted({names.index(label) for label in unsafe_labels})


class ClassifierGuard(Guard):
    """Risk = probability of the unsafe labels of a sequence classifier.

    :param model: a local model folder or a hub id of an ``AutoModelForSequenceClassification``.
    :param unsafe_labels: label names (from ``config.id2label``) that mean unsafe; ``None``: see the
        module docstring.
    :param pair: classify ``(prompt, response)`` as a text pair; ``False``: the response alone.
    :param device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"``.
    :param dtype: ``"auto"`` (float32 on CPU, bfloat16 on GPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    :param threshold: risk at or above which a response is flagged.
    :param batch_size: rows per forward.
    :param max_length: tokens per row; longer inputs are truncated (longest part first for a pair).
    """

    @property
    def lineage(self) -> frozenset[str]:
        """The guard model named in its spec."""
        return frozenset({f"model:{self.model_spec}"})

    def __init__(
        self,
        model: str,
        *,
        unsafe_labels: Sequence[str] | None = None,
        pair: bool = True,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        threshold: float = 0.5,
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        check_model_guard_options(threshold, batch_size, max_length)
        dev = resolve_device(device)
        self.model, self.tokenizer = load_classifier(model, dev, resolve_dtype(dtype, dev))
        self.label_ids = unsafe_label_ids(self.model.config, unsafe_labels, model)
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.name = f"classifier:{model}"
        self.model_spec = model
        self.pair = bool(pair)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)

    @property
    def labels(self) -> list[str]:
        """The model's label names, by index."""
        config = self.model.config
        return [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"score needs one prompt per response, got {len(prompts)} and {len(responses)}")
        risk = [
            self._risk(list(prompts[i : i + self.batch_size]), list(responses[i : i + self.batch_size]))
            for i in range(0, len(responses), self.batch_size)
        ]
        return check_risk(np.concatenate(risk) if risk else np.zeros(0), len(responses), self.name)

    def _risk(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Risk of one batch: tokenize, right-pad, one forward."""
        texts = (prompts, responses) if self.pair else (responses,)
        enc = self.tokenizer(*texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        empty = enc["attention_mask"].sum(-1) == 0  # (b,) rows with no token
        if enc["input_ids"].shape[1] == 0:
            return np.zeros(len(responses))
        device = self.model.device
        with torch.inference_mode():
            logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # (b, C)
        if logits.shape[-1] == 1 or self.multi_label:
            risk = torch.sigmoid(logits[:, self.label_ids]).amax(-1)  # (b,)
        else:
            risk = logits.softmax(-1)[:, self.label_ids].sum(-1)  # (b,)
        risk = risk.cpu().masked_fill(empty, 0.0)
        return risk.clamp(0.0, 1.0).numpy().astype(np.float64)
