"""The backend decodes exactly like transformers' generate, and its state edits are exact."""

from __future__ import annotations

import torch

from latentguard.lm import SamplingConfig, generate
from tests.conftest import PROMPTS


def _hf_greedy(lm, prompts, new_tokens):
    ids = [lm.encode_prompt(p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[lm.pad_token_id] * (width - len(i)) + i for i in ids], device=lm.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=lm.device)
    out = lm.model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=lm.pad_token_id,
    )
    return out[:, width:].tolist()


def test_greedy_steps_match_hf_generate_on_padded_batch(default_lm):
    ours = generate(default_lm, PROMPTS, max_new_tokens=24, min_new_tokens=24)
    assert [c.token_ids for c in ours.completions] == _hf_greedy(default_lm, PROMPTS, 24)


def test_greedy_matches_hf_generate_on_tiny_model(tiny_lm):
    ours = generate(tiny_lm, PROMPTS, max_new_tokens=16, min_new_tokens=16)
    assert [c.token_ids for c in ours.completions] == _hf_greedy(tiny_lm, PROMPTS, 16)


def _greedy_steps(state, n):
    for _ in range(n):
        state.step(state.logits.argmax(-1))


def test_crop_then_step_equals_fresh_prefill_of_shorter_text(default_lm):
    state = default_lm.prefill(PROMPTS[:2])
    _greedy_steps(state, 10)
    state.crop(4)
    fresh = default_lm.prefill(token_ids=[state.token_ids(r) for r in range(2)])
    assert state.response_lengths.tolist() == [6, 6]
    torch.testing.assert_close(state.logits, fresh.logits, atol=2e-4, rtol=1e-4)
    tokens = state.logits.argmax(-1)
    state.step(tokens)
    fresh.step(tokens)
    torch.testing.assert_close(state.logits, fresh.logits, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(state.latent_tensor(), fresh.latent_tensor(), atol=2e-4, rtol=1e-4)


def test_crop_by_different_counts_per_row_matches_prefill(tiny_lm):
    state = tiny_lm.prefill(PROMPTS)
    _greedy_steps(state, 8)
    state.crop([3, 0, 8])
    assert state.response_lengths.tolist() == [5, 8, 0]
    fresh = tiny_lm.prefill(token_ids=[state.token_ids(r) for r in range(3)])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    for _ in range(3):  # keep decoding over the masked slots
        tokens = state.logits.argmax(-1)
        state.step(tokens)
        fresh.step(tokens)
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)


def test_select_rows_equals_running_those_rows_alone(tiny_lm):
    state = tiny_lm.prefill(PROMPTS)
    _greedy_steps(state, 5)
    state.select([2, 0, 2])
    tokens = torch.tensor([11, 22, 33], device=tiny_lm.device)
    state.step(tokens)
    for out_row, src in enumerate([2, 0, 2]):
        alone = tiny_lm.prefill([PROMPTS[src]])
        _greedy_steps(alone, 5)
        alone.step(tokens[out_row : out_row + 1])
        assert state.token_ids(out_row) == alone.token_ids(0)
        torch.testing.assert_close(state.logits[out_row], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_append_text_equals_prefill_of_the_longer_text(tiny_lm):
    state = tiny_lm.prefill(PROMPTS[:2])
    _greedy_steps(state, 3)
    state.append_text(["...oh I'm sorry, I just realized", None])
    assert state.response_lengths.tolist()[1] == 3
    fresh = tiny_lm.prefill(token_ids=[state.token_ids(r) for r in range(2)])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.latent_tensor(0), fresh.latent_tensor(0), atol=1e-5, rtol=1e-5)


def test_latent_layers_follow_hf_hidden_state_numbering(tiny_lm):
    ids = tiny_lm.encode_prompt(PROMPTS[0])
    state = tiny_lm.prefill(token_ids=[ids])
    with torch.no_grad():
        out = tiny_lm.model(torch.tensor([ids], device=tiny_lm.device), output_hidden_states=True)
    assert tiny_lm.captured_layers == [0, 1, 2]
    for layer in (0, 1, 2):
        torch.testing.assert_close(state.latent_tensor(layer)[0], out.hidden_states[layer][0, -1])
    assert state.latent().dtype == "float32" and state.latent().shape == (1, 64)


def test_same_seed_gives_same_sampled_text(tiny_lm):
    sampling = SamplingConfig(temperature=1.0, top_p=0.9)
    a = generate(tiny_lm, PROMPTS, 12, sampling, seed=7)
    b = generate(tiny_lm, PROMPTS, 12, sampling, seed=7)
    c = generate(tiny_lm, PROMPTS, 12, sampling, seed=8)
    assert [x.token_ids for x in a.completions] == [x.token_ids for x in b.completions]
    assert [x.token_ids for x in a.completions] != [x.token_ids for x in c.completions]


def test_generate_stops_rows_at_eos_and_pads_them(default_lm):
    result = generate(default_lm, ["What is the capital of France?", "Write a long story about a dragon."], 40)
    short, long = result.completions
    assert short.finished and short.token_ids[-1] in default_lm.eos_token_ids
    assert "Paris" in short.text
    assert not long.finished and len(long.token_ids) == 40


def test_restarting_rows_equals_a_fresh_prefill_and_compacts_the_cache(tiny_lm):
    state = tiny_lm.prefill(PROMPTS)
    _greedy_steps(state, 6)
    new_prompt = tiny_lm.encode_prompt("A new episode")
    keep = [state.token_ids(0) + [42], None, state.token_ids(2) + [43]]
    state.feed([[42], new_prompt, [43]], restart=[1])
    assert state.prompt_lengths[1] == len(new_prompt) and state.response_lengths.tolist() == [7, 0, 7]
    fresh = tiny_lm.prefill(token_ids=[keep[0], new_prompt, keep[2]])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    for _ in range(3):
        tokens = state.logits.argmax(-1)
        state.step(tokens)
        fresh.step(tokens)
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    x, y = tiny_lm.encode_prompt("x"), tiny_lm.encode_prompt("y")
    state.feed([x, y, [5]], restart=[0, 1])
    width = state.ids.shape[1]
    state.compact()
    assert state.ids.shape[1] == int(state.lengths.max()) < width  # repacked to the longest row
    fresh = tiny_lm.prefill(token_ids=[x, y, state.token_ids(2)])
    state.step([7, 8, 9])
    fresh.step([7, 8, 9])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)


def test_pooled_latent_is_the_mean_over_response_tokens_after_edits():
    from latentguard.lm import load_lm

    lm = load_lm("tiny")
    lm.capture_layer(1, history=True)
    state = lm.prefill(PROMPTS)
    assert torch.equal(state.pooled_latent(1), state.latent_tensor(1))  # no response yet: last token
    _greedy_steps(state, 70)  # grows the history buffer past its first capacity
    state.crop([2, 0, 5])
    state.select([2, 0])
    state.append_text([" and so on", None])
    for row in range(2):
        ids = state.token_ids(row)
        start = int(state.prompt_lengths[row])
        with torch.no_grad():
            hidden = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]  # (T, H)
        torch.testing.assert_close(state.pooled_latent(1, rows=[row])[0], hidden[start:].mean(0), atol=1e-5, rtol=1e-5)


def test_per_row_seeds_make_answers_independent_of_the_batch(tiny_lm):
    sampling = SamplingConfig(temperature=1.0)
    together = generate(tiny_lm, PROMPTS, 10, sampling, seed=[11, 22, 33])
    alone = generate(tiny_lm, [PROMPTS[2]], 10, sampling, seed=[33])
    assert together.completions[2].token_ids == alone.completions[0].token_ids


def test_a_splice_beside_steps_runs_only_the_fed_rows_and_equals_a_fresh_prefill(tiny_lm):
    state = tiny_lm.prefill(PROMPTS)
    _greedy_steps(state, 4)
    idle_logits = state.logits[2].clone()
    splice = tiny_lm.tokenizer(" wait, let me think again", add_special_tokens=False).input_ids
    before = state.positions_run
    state.feed([splice, [42], []])  # row 0: a splice, row 1: one step, row 2: nothing (idle)
    assert state.positions_run - before == len(splice) + 1  # not 3 rows x len(splice)
    assert torch.equal(state.logits[2], idle_logits)
    fresh = tiny_lm.prefill(token_ids=[state.token_ids(r) for r in range(3)])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    state.step([7, 8, 9])
    fresh.step([7, 8, 9])
    torch.testing.assert_close(state.logits, fresh.logits, atol=1e-5, rtol=1e-5)


def test_steps_append_to_the_kv_cache_in_place(tiny_lm):
    state = tiny_lm.prefill(PROMPTS)
    _greedy_steps(state, 1)  # the first append moves the cache into buffers with spare room
    layer = state.cache.layers[0]
    buffer = layer._keys.data_ptr()
    _greedy_steps(state, 20)
    assert layer._keys.data_ptr() == buffer and layer.keys.data_ptr() == buffer  # no copy per step
    assert layer.keys.shape[2] == state.ids.shape[1]


def test_prompt_latent_is_the_request_state_at_prefill_after_steps_crops_and_restarts():
    from latentguard.lm import load_lm

    lm = load_lm("tiny")
    lm.capture_layer(2, history=True)
    state = lm.prefill(PROMPTS)
    at_prefill = state.latent_tensor(2).clone()  # (B, H): the last prompt token's state
    _greedy_steps(state, 6)
    state.crop([2, 0, 6])
    state.feed([[5], lm.encode_prompt("A new one"), [7]], restart=[1])
    fresh = lm.prefill(["A new one"])
    torch.testing.assert_close(state.prompt_latent(2, rows=[0, 2]), at_prefill[[0, 2]])
    torch.testing.assert_close(state.prompt_latent(2, rows=[1])[0], fresh.latent_tensor(2)[0], atol=1e-5, rtol=1e-5)


def test_a_prefill_read_as_request_is_left_out_of_the_pooled_answer(tiny_lm):
    from latentguard.lm import Chat

    layer = tiny_lm.capture_layer(tiny_lm.latent_layer, history=True)
    chat = Chat([{"role": "user", "content": PROMPTS[0]}], prefill="Sure, here is")
    state = tiny_lm.prefill(token_ids=[tiny_lm.encode_prompt(chat)])
    forced = int(state.forced_lengths[0])
    for token in (5, 6, 7):
        state.step([token])
    states, _ = state.response_states(layer)  # (1, T, H)
    hidden = states[0, state.mask[0].bool()]  # (real tokens, H)
    as_answer = state.features(layer, "mean", forced_as_answer=True)[0]
    as_request = state.features(layer, "mean", forced_as_answer=False)[0]
    assert forced > 0
    torch.testing.assert_close(as_answer, hidden[-(forced + 3):].mean(0))  # the forced words and the 3 decoded
    torch.testing.assert_close(as_request, hidden[-3:].mean(0))  # the 3 decoded only
