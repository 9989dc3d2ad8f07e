"""latentguard-serve on localhost, on the tiny model, spoken to with the official openai client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import openai
import pytest
import torch
import uvicorn

from latentguard.episodes.release import REFUSAL
from latentguard.guards import CallableGuard
from latentguard.lm import Chat
from latentguard.serving import Generator
from latentguard.serving.config import ServeConfig
from latentguard.serving.scheduler import QueueFull, Request, Scheduler
from latentguard.serving.server import App


def long_guard(prompts, responses):
    """Flags an answer over 12 characters."""
    return [float(len(r) > 12) for r in responses]


def broken_guard(prompts, responses):
    raise RuntimeError("the guard's backend is down")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server in a thread, stopped as SIGTERM would (should_exit)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app.asgi(), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def gen():
    return Generator(model="tiny", guard=CallableGuard(long_guard, name="long"), reward="")


@pytest.fixture(scope="module")
def server(gen):
    running = Running(App(ServeConfig(model="tiny", max_tokens=64), gen))
    yield running
    running.stop()


def test_a_chat_answer_is_the_batch_answer(server, gen):
    reply = server.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Name a fruit."}],
                                                  max_tokens=12)
    batch = gen.generate(["Name a fruit."], "vanilla", max_new_tokens=12)[0]
    assert reply.choices[0].message.content == batch.text.lstrip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens == batch.released_tokens


def test_a_streamed_chat_joins_to_the_same_answer_and_ends_with_its_reason(server):
    asked = dict(model="tiny:vanilla", messages=[{"role": "user", "content": "Say hello there."}], max_tokens=12)
    whole = server.client.chat.completions.create(**asked).choices[0].message.content
    chunks = list(server.client.chat.completions.create(**asked, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole and len(chunks) >= 4  # several releases, not one block
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_care_refusal_is_content_filter_and_shows_no_flagged_text(server):
    reply = server.client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Count to three."}], max_tokens=24,
        extra_body={"latentguard": {"method": "care-resample:b=6:N=0"}})
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "content_filter" and content.endswith(REFUSAL)
    assert len(content[: -len(REFUSAL)].strip()) <= 12


def test_n_answers_are_the_first_answer_then_the_same_chat_s_other_samples(server, gen):
    asked = dict(model="tiny", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=10, n=3)
    reply = server.client.chat.completions.create(**asked)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    prompts = ["Name a fruit."] + [Chat([{"role": "user", "content": "Name a fruit."}], sample=j) for j in (1, 2)]
    batch = gen.generate(prompts, "vanilla", max_new_tokens=10)
    assert texts == [b.text.lstrip() for b in batch] and len(set(texts)) == 3
    assert reply.usage.completion_tokens == sum(b.released_tokens for b in batch)
    streamed = ["", "", ""]
    for chunk in server.client.chat.completions.create(**asked, stream=True):
        streamed[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    assert streamed == texts


def test_completions_answer_a_plain_prompt(server, gen):
    reply = server.client.completions.create(model="tiny:vanilla", prompt="Name a fruit.", max_tokens=8)
    assert reply.choices[0].text == gen.generate(["Name a fruit."], "vanilla", max_new_tokens=8)[0].text.lstrip()


def test_models_health_and_metrics(server):
    names = [m.id for m in server.client.models.list().data]
    assert names[0] == "tiny" and "tiny:critic-search" in names and "tiny:care" in names
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    metrics = httpx.get(server.url + "/metrics").text
    assert "latentguard_requests_total" in metrics and "latentguard_rows_in_flight 0" in metrics


@pytest.mark.parametrize("body,status,param", [
    ({"model": "tiny"}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, 400, "model"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}, 404, "model"),
    ({"model": "tiny:no-such-method", "messages": [{"role": "user", "content": "Hi"}]}, 400, "model"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "temprature": 0.5}, 400, "temprature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "messages[0].content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "n": 0}, 400, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "n": 99}, 400, "n"),
])
def test_bad_requests_get_the_openai_error_shape(server, body, status, param):
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_is_a_400_that_says_so(server):
    response = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_a_client_that_goes_away_mid_stream_frees_its_request(server):
    before = server.app.scheduler.counters.cancelled
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 64,
            "stream": True}, timeout=10) as response:
        next(response.iter_lines())  # the first chunk, then hang up
    deadline = time.time() + 20
    while server.app.scheduler.counters.cancelled == before and time.time() < deadline:
        time.sleep(0.05)
    assert server.app.scheduler.counters.cancelled == before + 1
    while server.app.scheduler.counters.rows_in_flight and time.time() < deadline:
        time.sleep(0.05)
    assert server.app.scheduler.counters.rows_in_flight == 0
    reply = server.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4)
    assert reply.choices[0].message.content is not None  # still serving


def test_a_guard_that_raises_fails_closed_and_the_server_stays_up():
    running = Running(App(ServeConfig(model="tiny"), Generator(model="tiny", guard=CallableGuard(broken_guard),
                                                                reward="")))
    try:
        reply = running.client.chat.completions.create(
            model="tiny:care-resample:b=6:N=0", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=16)
        assert reply.choices[0].finish_reason == "content_filter" and reply.choices[0].message.content == REFUSAL
        plain = running.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                       max_tokens=4)
        assert plain.choices[0].finish_reason in ("stop", "length")
    finally:
        running.stop()


def request(loop, method="vanilla", prompt="Hi"):
    return Request(prompt, method, 4, 0.7, 0.9, loop)


def test_waiting_requests_of_one_method_share_a_batch_and_other_methods_wait_their_turn(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=3, max_queue=8)
    batches = []
    scheduler.on_batch = lambda batch: batches.append([r.method for r in batch])
    for method in ["vanilla", "vanilla", "greedy", "vanilla", "vanilla"]:
        scheduler.submit(request(loop, method))
    scheduler.start()
    deadline = time.time() + 30
    while scheduler.counters.completed < 5 and time.time() < deadline:
        time.sleep(0.05)
    scheduler.stop(10)
    loop.close()
    assert batches == [["vanilla"] * 3, ["greedy"], ["vanilla"]]


def test_a_full_queue_refuses_with_queue_full(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=2, max_queue=2)  # not started: nothing leaves the queue
    scheduler.submit(request(loop))
    scheduler.submit(request(loop))
    with pytest.raises(QueueFull, match="2 requests are waiting \\(--max-queue 2\\)"):
        scheduler.submit(request(loop))
    assert scheduler.counters.rejected == 1
    loop.close()


def test_n_choices_queue_together_or_not_at_all_and_an_answered_one_is_not_cancelled(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=2, max_queue=3)  # not started: nothing leaves the queue
    first = scheduler.submit(request(loop))
    with pytest.raises(QueueFull, match="3 more do not fit"):
        scheduler.submit_all([request(loop) for _ in range(3)])
    assert len(scheduler.waiting) == 1 and scheduler.counters.rejected == 3
    first.done = True  # as the decoding thread marks an answered request
    scheduler.cancel(first)
    assert not first.cancelled and scheduler.counters.cancelled == 0
    loop.close()


def test_sigterm_lets_the_stream_in_flight_end_then_exits_cleanly():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "latentguard.cli.serve", "--model", "tiny", "--guard", "keyword",
                             "--reward", "", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 200, "stream": True}
        chunks = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:]))
                    if len(chunks) == 2:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
        # uvicorn re-raises the signal after its graceful shutdown, so the status is the signal's own
        assert proc.wait(60) in (0, -signal.SIGTERM)
        log = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert "Finished server process" in log  # the graceful path, not a kill
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")  # the answer in flight ended
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) > 2  # it kept streaming after SIGTERM


def test_prefix_cache_false_feeds_every_prompt_whole_and_answers_the_same(gen):
    whole = Generator(model="tiny", guard=CallableGuard(long_guard, name="long"), reward="")
    App(ServeConfig(model="tiny", prefix_cache=False), whole)
    prompts = ["Name a fruit.", "Count to three."]
    answers = whole.generate(prompts, "vanilla", max_new_tokens=8)
    assert whole.lm.prefixes.hits == 0
    cached = gen.generate(prompts, "vanilla", max_new_tokens=8)
    assert gen.lm.prefixes.hits >= len(prompts)
    assert [a.text for a in answers] == [c.text for c in cached]


def test_a_chat_with_its_own_system_message_and_earlier_turns_is_answered_as_that_chat(server, gen):
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a fruit."},
                {"role": "assistant", "content": "Apple."}, {"role": "user", "content": "Another one?"}]
    reply = server.client.chat.completions.create(model="tiny", messages=messages, max_tokens=10)
    chat = Chat(messages)
    batch = gen.generate([chat], "vanilla", max_new_tokens=10)[0]
    assert reply.choices[0].message.content == batch.text.lstrip()
    read = gen.lm.encode_prompt(chat)
    assert reply.usage.prompt_tokens == len(read) > len(gen.lm.encode_prompt("Another one?"))
    assert "Be terse." in gen.lm.tokenizer.decode(read) and "Apple." in gen.lm.tokenizer.decode(read)


@pytest.mark.parametrize("messages,fix", [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "must be the user's"),
    ([{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be terse."}], "put the system message first"),
    ([{"role": "tool", "content": "42"}, {"role": "user", "content": "Hi"}], "does not call tools"),
])
def test_a_chat_the_model_cannot_answer_is_a_400_that_names_the_fix(server, messages, fix):
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": messages})
    assert response.status_code == 400 and fix in response.json()["error"]["message"]


def test_the_server_system_prompt_is_every_prompt_s_head_computed_once():
    system = "You are a careful assistant who answers in one short sentence."
    gen = Generator(model="tiny", guard="keyword", reward="", system_prompt=system)
    head = gen.lm.chat_head_ids()
    assert system in gen.lm.tokenizer.decode(head)
    answers = gen.generate(["Name a fruit.", "Count to three."], "vanilla", max_new_tokens=8)
    assert gen.lm.prefixes.hits == 2 and gen.lm.prefixes.tokens_saved == 2 * len(head)
    gen.lm.prefixes.enabled = False
    assert [a.text for a in gen.generate(["Name a fruit.", "Count to three."], "vanilla", max_new_tokens=8)] == \
        [a.text for a in answers]


def test_a_generator_loads_its_model_in_the_dtype_asked():
    assert Generator(model="tiny", guard="", reward="", dtype="bfloat16").lm.model.dtype == torch.bfloat16


def test_an_empty_system_prompt_is_named():
    with pytest.raises(ValueError, match="system_prompt is empty"):
        Generator(model="tiny", guard="", reward="", system_prompt=" ")


@pytest.mark.parametrize("field, value, message", [
    ("max_rows", 0, "max_rows must be >= 1, got 0"),
    ("gather_seconds", -1, r"gather_seconds must be in \[0, 10\] seconds, got -1"),
    ("dtype", "fp8", "unknown dtype 'fp8'; use 'auto' or one of"),
])
def test_a_bad_server_option_is_named_with_its_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        ServeConfig(**{field: value})


def arriving(scheduler, loop, gaps):
    """A thread that submits one request after each gap (seconds)."""
    def run():
        for gap in gaps:
            time.sleep(gap)
            scheduler.submit(request(loop))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_gather_waits_while_requests_keep_coming_then_starts(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=16, max_queue=16, gather_seconds=0.1)  # not started: _take runs here
    scheduler.submit(request(loop))
    feeder = arriving(scheduler, loop, [0.02] * 4 + [0.6])  # four more 20 ms apart, one after a pause
    start = time.perf_counter()
    taken = scheduler._take(request(loop).group, 16, scheduler.gather_seconds)
    waited = time.perf_counter() - start
    feeder.join()
    loop.close()
    assert len(taken) == 5  # the burst, not the one after the pause
    assert 0.17 < waited < 0.5  # the burst (about 80 ms), then 100 ms without a new one


def test_the_gather_stops_after_its_limit_however_many_keep_coming(gen):
    from latentguard.serving.scheduler import GATHER_LIMIT

    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=64, max_queue=64, gather_seconds=0.05)  # limit: 4 x 50 ms = 0.2 s
    feeder = arriving(scheduler, loop, [0.01] * 60)  # a request every 10 ms for 0.6 s
    start = time.perf_counter()
    taken = scheduler._take(request(loop).group, 64, scheduler.gather_seconds)
    waited = time.perf_counter() - start
    feeder.join()
    loop.close()
    assert GATHER_LIMIT * 0.05 - 0.01 < waited < GATHER_LIMIT * 0.05 + 0.15
    assert 5 < len(taken) < 60


def test_a_method_where_a_late_request_waits_longer_gathers_longer(gen):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(gen, max_rows=4, max_queue=8, gather_seconds=0.0, block_gather_seconds=0.3)
    batches = []
    scheduler.on_batch = lambda batch: batches.append(len(batch))
    scheduler.start()
    for method in ["vanilla", "best-of-n:n=2"]:  # one takes requests at every step, one decodes whole batches
        first = scheduler.submit(Request("Name a fruit.", method, 8, 0.7, 0.9, loop))
        time.sleep(0.1)  # the second comes 100 ms after the first
        second = scheduler.submit(Request("Say hello there.", method, 8, 0.7, 0.9, loop))
        deadline = time.time() + 60
        while not (first.done and second.done) and time.time() < deadline:
            time.sleep(0.02)
    scheduler.stop(10)
    loop.close()
    assert batches == [1, 1, 2]  # vanilla started at once, the second came alone; best-of-n waited for both
