"""The classifier guard: the probability of the unsafe labels of any sequence classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from latentguard.guards import make_guard
from latentguard.guards.classifier import ClassifierGuard
from latentguard.lm.loading import _tiny_model, tiny_tokenizer
from tests.conftest import DEVICE

PROMPTS = ["How do I bake bread?", "Hi", "Write a haiku about rain."]
RESPONSES = ["Mix flour, water, yeast and salt; knead and bake.", "Hello!", "Grey sky, soft drumming."]


def tiny_classifier(
    folder, num_labels: int, id2label: dict[int, str] | None = None, **config
) -> LlamaForSequenceClassification:
    """A random 2-layer Llama classifier with the tiny tokenizer, saved (no pad_token_id) in ``folder``."""
    tok = tiny_tokenizer()
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        **extra,
        **config,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg).eval()
    torch.nn.init.normal_(model.score.weight, std=0.1)  # spread the probabilities away from uniform
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def reference_logits(model, first: list[str], second: list[str] | None = None) -> torch.Tensor:
    """(B, C) logits from one unpadded forward per row."""
    tok = tiny_tokenizer()
    rows = []
    for i, text in enumerate(first):
        ids = tok(text, second[i]).input_ids if second is not None else tok(text).input_ids
        with torch.no_grad():
            rows.append(model(torch.tensor([ids])).logits[0].float())
    return torch.stack(rows)


def test_two_label_risk_is_the_softmax_of_label_one(tmp_path):
    model = tiny_classifier(tmp_path, num_labels=2)
    guard = make_guard(f"classifier:{tmp_path}")
    assert isinstance(guard, ClassifierGuard) and guard.labels == ["LABEL_0", "LABEL_1"]
    expected = reference_logits(model, PROMPTS, RESPONSES).softmax(-1)[:, 1].numpy()
    risk = guard.score(PROMPTS, RESPONSES)  # lengths differ: rows are padded
    np.testing.assert_allclose(risk, expected, atol=1e-5)
    assert len(set(risk.round(4))) == 3


def test_padded_batches_give_the_risks_of_single_items(tmp_path):
    tiny_classifier(tmp_path, num_labels=2)
    one = ClassifierGuard(str(tmp_path), batch_size=1, device=DEVICE, dtype="float32").score(PROMPTS, RESPONSES)
    batched = ClassifierGuard(str(tmp_path), batch_size=16, device=DEVICE, dtype="float32").score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(one, batched, atol=1e-5)


def test_named_unsafe_labels_sum_their_probabilities_on_the_response_alone(tmp_path):
    labels = {0: "ok", 1: "toxic", 2: "threat"}
    model = tiny_classifier(tmp_path, num_labels=3, id2label=labels)
    guard = ClassifierGuard(str(tmp_path), unsafe_labels=["threat", "toxic"], pair=False)
    probs = reference_logits(model, RESPONSES).softmax(-1)  # (B, 3), the prompt is not read
    np.testing.assert_allclose(guard.score(PROMPTS, RESPONSES), (probs[:, 1] + probs[:, 2]).numpy(), atol=1e-5)


def test_unknown_labels_are_refused_with_the_model_labels(tmp_path):
    tiny_classifier(tmp_path, num_labels=3, id2label={0: "ok", 1: "toxic", 2: "threat"})
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['hate'\].*its labels are \['ok', 'toxic', 'threat'\]"):
        ClassifierGuard(str(tmp_path), unsafe_labels=["toxic", "hate"])
    with pytest.raises(ValueError, match=r"has 3 labels \['ok', 'toxic', 'threat'\]; say which are unsafe"):
        ClassifierGuard(str(tmp_path))


def test_single_logit_and_multi_label_models_use_sigmoids(tmp_path):
    single = tiny_classifier(tmp_path / "single", num_labels=1)
    expected = torch.sigmoid(reference_logits(single, PROMPTS, RESPONSES)[:, 0]).numpy()
    np.testing.assert_allclose(ClassifierGuard(str(tmp_path / "single")).score(PROMPTS, RESPONSES), expected, atol=1e-5)

    labels = {0: "toxic", 1: "insult", 2: "threat"}
    multi = tiny_classifier(tmp_path / "multi", 3, labels, problem_type="multi_label_classification")
    guard = ClassifierGuard(str(tmp_path / "multi"), unsafe_labels=["toxic", "threat"])
    expected = torch.sigmoid(reference_logits(multi, PROMPTS, RESPONSES))[:, [0, 2]].amax(-1).numpy()
    np.testing.assert_allclose(guard.score(PROMPTS, RESPONSES), expected, atol=1e-5)


def test_an_empty_text_has_nothing_to_classify(tmp_path):
    tiny_classifier(tmp_path, num_labels=2)
    guard = ClassifierGuard(str(tmp_path), pair=False)
    risk = guard.score(["q", "q"], ["", "Hello!"])
    assert risk[0] == 0.0 and risk[1] == pytest.approx(guard.score(["q"], ["Hello!"])[0], abs=1e-6)
    assert guard.score(["q"], [""]).tolist() == [0.0]


def test_a_causal_lm_folder_is_not_a_classifier(tmp_path):
    tok = tiny_tokenizer()
    _tiny_model(tok, seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a LlamaForCausalLM, not a sequence classifier.*use 'judge:"):
        ClassifierGuard(str(tmp_path))
    with pytest.raises(ValueError, match="needs a local model folder or a hub id, got 'tiny'"):
        ClassifierGuard("tiny")


def test_loading_errors_say_that_nothing_is_downloaded(tmp_path):
    with pytest.raises(
        OSError, match=r"could not load classifier .* latentguard downloads nothing unless you name a hub"
    ):
        ClassifierGuard(str(tmp_path))  # an empty folder
