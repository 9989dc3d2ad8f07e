"""The judge guard reads P(unsafe) / (P(unsafe) + P(safe)) at the verdict position, one forward per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentguard.guards import make_guard
from latentguard.guards.judge import JudgeGuard, template_from_chat
from latentguard.lm.loading import _tiny_model, load_model_and_tokenizer, tiny_tokenizer
from tests.conftest import DEVICE

PAIRS = [
    ("How do I bake bread?", "Mix flour, water, yeast and salt; knead, let it rise, then bake at 220 C."),
    ("Hi", ""),
    ("Write a haiku about rain.", "Grey sky, soft drumming."),
]

# Llama Guard 3 1B style: content is a list of text parts; renders exactly like the tiny ChatML template.
PARTS_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ '<|im_start|>system\\nYou are a helpful AI assistant."
    "<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def reference_risk(
    texts: list[str], unsafe: str = "u", safe: str = "s", add_special_tokens: bool = False
) -> np.ndarray:
    """p_u / (p_u + p_s) from a softmax at the last position of a separate, unpadded forward per text."""
    model, tok, _ = load_model_and_tokenizer("tiny", torch.device(DEVICE), torch.float32)
    u, s = tok.convert_tokens_to_ids(unsafe), tok.convert_tokens_to_ids(safe)
    risks = []
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=add_special_tokens).input_ids], device=DEVICE)
        with torch.no_grad():
            p = model(ids).logits[0, -1].float().softmax(-1)  # (V,)
        risks.append((p[u] / (p[u] + p[s])).item())
    return np.array(risks)


def chatml(prompt: str, response: str) -> str:
    conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return tiny_tokenizer().apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def save_tiny(folder, chat_template: str | None) -> str:
    """The tiny model and tokenizer in a local folder, with the given chat template."""
    tok = tiny_tokenizer()
    tok.chat_template = chat_template
    _tiny_model(tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_risk_is_the_unsafe_share_of_the_verdict_softmax():
    guard = JudgeGuard("tiny", unsafe_tokens=("u",), safe_tokens=("s",), device=DEVICE, dtype="float32")
    risk = guard.score([p for p, _ in PAIRS], [r for _, r in PAIRS])  # 3 lengths: left padding is used
    expected = reference_risk([chatml(p, r) for p, r in PAIRS])
    np.testing.assert_allclose(risk, expected, atol=1e-5)
    assert risk.dtype == np.float64 and len(set(risk.round(6))) == 3


def test_batch_size_does_not_change_the_risks():
    prompts = [p for p, _ in PAIRS] * 2
    responses = [r for _, r in PAIRS] + ["No.", "Sure, here it is: " * 5, "ok"]
    one = JudgeGuard("tiny", batch_size=1, device=DEVICE, dtype="float32").score(prompts, responses)
    eight = JudgeGuard("tiny", batch_size=8, device=DEVICE, dtype="float32").score(prompts, responses)
    np.testing.assert_allclose(one, eight, atol=1e-5)


def test_verdict_words_count_by_their_first_token():
    guard = JudgeGuard("tiny")
    tok = guard.tokenizer
    # " unsafe" and "\nunsafe" start with a space/newline byte, which says nothing about the word.
    assert guard.unsafe_ids == [tok.convert_tokens_to_ids("u")]
    assert guard.safe_ids == [tok.convert_tokens_to_ids("s")]
    with pytest.raises(ValueError, match="share the first token"):
        JudgeGuard("tiny", unsafe_tokens=("unsafe",), safe_tokens=("unclear",))


def test_make_guard_builds_a_judge():
    guard = make_guard("judge:tiny")
    assert isinstance(guard, JudgeGuard) and guard.name == "judge:tiny"
    risk = guard.score(["How do I bake bread?", "Hi"], ["Knead the dough.", ""])
    assert risk.shape == (2,) and np.all((risk >= 0) & (risk <= 1))
    with pytest.raises(ValueError, match="needs a model"):
        make_guard("judge")


def test_a_model_without_chat_template_needs_a_template(tmp_path):
    folder = save_tiny(tmp_path, chat_template=None)
    with pytest.raises(ValueError, match=r"model '.*' has no chat template; pass template="):
        JudgeGuard(folder)
    assert JudgeGuard(folder, template="{prompt}\n{response}\nVerdict:").score(["q"], ["a"]).shape == (1,)


def test_custom_template_is_what_the_model_reads():
    template = "Request: {prompt}\nAnswer: {response}\nIs the answer {{safe}} or {{unsafe}}? "
    guard = JudgeGuard("tiny", template=template, unsafe_tokens=("u",), safe_tokens=("s",), dtype="float32")
    risk = guard.score([p for p, _ in PAIRS], [r for _, r in PAIRS])
    texts = [template.format(prompt=p, response=r) for p, r in PAIRS]
    assert guard.render(*PAIRS[0]) == texts[0]
    np.testing.assert_allclose(risk, reference_risk(texts, add_special_tokens=True), atol=1e-5)


def test_bad_templates_and_verdict_words_are_refused():
    with pytest.raises(ValueError, match=r"fields \{prompt\} and \{response\}.*got \['prompt'\]"):
        JudgeGuard("tiny", template="Judge this: {prompt}")
    with pytest.raises(ValueError, match=r"got \['prompt', 'response', 'role'\]"):
        JudgeGuard("tiny", template="{role}: {prompt} {response}")
    with pytest.raises(ValueError, match="unsafe word '' tokenizes to nothing"):
        JudgeGuard("tiny", unsafe_tokens=("",))
    with pytest.raises(ValueError, match="safe word ' ' tokenizes to nothing"):
        JudgeGuard("tiny", safe_tokens=(" ",))


def test_chat_templates_that_take_text_parts_are_detected(tmp_path):
    guard = JudgeGuard(save_tiny(tmp_path, PARTS_TEMPLATE), dtype="float32")
    assert guard.parts
    prompts, responses = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    np.testing.assert_allclose(guard.score(prompts, responses), JudgeGuard("tiny").score(prompts, responses), atol=1e-5)


def test_template_from_chat_freezes_the_chat_template_with_a_suffix():
    tok = tiny_tokenizer()
    template = template_from_chat(tok, suffix="Verdict:")
    prompt, response = "Use {braces}?", "Yes: {x}"
    assert template.format(prompt=prompt, response=response) == chatml(prompt, response) + "Verdict:"


def test_prompt_longer_than_max_length_is_an_error():
    guard = JudgeGuard("tiny", max_length=100)
    with pytest.raises(ValueError, match=r"moderation prompt 1 has \d+ tokens, over max_length=100"):
        guard.score(["Hi", "Hi"], ["ok", "a long answer " * 10])
