"""``latentguard-serve``: guarded answers behind the OpenAI protocol, streamed as they are released.

    latentguard-serve --model smollm2-135m-instruct --guard latent-probe --port 8000

Endpoints:

- ``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming (server-sent events) or not.
  The method is chosen per request: a model name ``MODEL:METHOD`` (``smollm2-135m-instruct:care``,
  ``smollm2-135m-instruct:critic-search``; the method spec may carry options,
  ``MODEL:care:b=20``) or the extension field ``"latentguard": {"method": "care"}``; the bare model
  name answers with ``--method``. ``finish_reason`` is ``"content_filter"`` where the method refused
  or fell back (the protocol's own word), else ``"stop"`` or ``"length"``. The answer's record
  (interventions, wait tokens, guard calls) comes in the extension field ``latentguard``.
- ``GET /v1/models`` (the model, and the model with each registered method), ``GET /health``,
  ``GET /metrics`` (Prometheus text: requests, queue depth, rows in flight, released tokens,
  interventions, refusals).

Errors take the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``: 400 for bad input
(malformed JSON, a missing or unknown field, an unknown method, ``max_tokens`` out of range), 404 for
an unknown model, 429 when ``--max-queue`` requests are waiting, 500 when decoding failed (the
server stays up). Requests are batched by :class:`~latentguard.serving.scheduler.Scheduler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from latentguard.agents.registry import METHODS
from latentguard.lm.chat import Chat
from latentguard.serving.config import ServeConfig
from latentguard.serving.generator import Generator
from latentguard.serving.scheduler import QueueFull, Request, Scheduler
from latentguard.serving.stream import StreamEvent

try:
    from starlette.applications import Starlette
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError("the server needs starlette and uvicorn: pip install 'latentguard[serve]'") from err

CHAT_FIELDS = {"model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
               "stream_options", "user", "latentguard", "seed"}
COMPLETION_FIELDS = {"model", "prompt", "stream", "max_tokens", "temperature", "top_p", "n", "stream_options", "user",
                     "latentguard", "seed"}


class BadRequest(ValueError):
    """A request the server cannot answer: its message names the value and the fix."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_response(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    """The OpenAI error shape."""
    kind = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


class App:
    """The server's state: generator, scheduler, and the request handlers."""

    def __init__(self, config: ServeConfig, generator: Generator | None = None) -> None:
        self.config = config
        self.generator = generator or Generator(config.model, config.guard, config.reward, seed=config.seed,
                                                system_prompt=config.system_prompt or None, dtype=config.dtype)
        self.generator.lm.prefixes.enabled = config.prefix_cache
        self.model_id = self.generator.lm.model_id
        self.scheduler = Scheduler(self.generator, config.max_rows, config.max_queue, config.gather_seconds,
                                   config.block_gather_seconds)
        self.started = time.time()

    # ------------------------------------------------------------------ reading a request
    def method_of(self, body: dict) -> str:
        """The method spec a request asks for (model suffix or extension field), checked."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: give the served model's name, e.g. "
                             f"{self.model_id!r} or {self.model_id + ':critic-search'!r}", "model")
        name, _, suffix = model.partition(":")
        if name != self.model_id:
            raise BadRequest(f"model {model!r} is not served here; this server serves {self.model_id!r} "
                             f"(GET /v1/models lists the names)", "model", 404, "model_not_found")
        extension = body.get("latentguard") or {}
        if not isinstance(extension, dict):
            raise BadRequest("'latentguard' must be an object, e.g. {\"method\": \"care\"}", "latentguard")
        asked = extension.get("method")
        if asked and suffix and asked != suffix:
            raise BadRequest(f"the model name asks for method {suffix!r} but latentguard.method is {asked!r}: give one",
                             "latentguard.method")
        spec = asked or suffix or self.config.method
        try:
            self.generator.method(spec, self.generator.context())
        except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
            raise BadRequest(f"unknown or unusable method {spec!r}: {err}", "model", 400, "invalid_method") from err
        return spec

    def settings_of(self, body: dict) -> tuple[int, float, float, int]:
        """(max_tokens, temperature, top_p, n), checked against their ranges."""
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = 64 if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.config.max_tokens:
            raise BadRequest(f"max_tokens must be an integer from 1 to {self.config.max_tokens} (--max-tokens), "
                             f"got {max_tokens!r}", "max_tokens")
        temperature = body.get("temperature", 0.7)
        top_p = body.get("top_p", 0.9)
        for name, value, low, high in (("temperature", temperature, 0.0, 2.0), ("top_p", top_p, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r}", name)
        n = body.get("n", 1)
        n = 1 if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.config.max_n:
            raise BadRequest(f"n must be an integer from 1 to {self.config.max_n} (--max-n), got {n!r}", "n")
        return max_tokens, float(temperature), float(top_p), n

    def prompt_of_chat(self, body: dict) -> str:
        """The conversation to answer: one user message as plain text, anything longer (a system
        message of its own, earlier turns) as a :class:`~latentguard.lm.Chat`."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required: a list like [{\"role\": \"user\", \"content\": \"...\"}]", "messages")
        for i, m in enumerate(messages):
            if isinstance(m, dict) and m.get("role") == "tool":
                raise BadRequest(f"messages[{i}] is a tool message; this server does not call tools, send the tool's "
                                 "result as a user message", f"messages[{i}]")
        try:
            chat = Chat(messages)
        except ValueError as err:
            raise BadRequest(str(err), "messages") from err
        if len(chat.messages) == 1:
            return self.checked_prompt(str(chat), "messages[0].content")
        return self.checked_prompt(chat, f"messages[{len(messages) - 1}].content")

    def checked_prompt(self, prompt: Any, param: str) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest(f"{param} must be a non-empty string, got {prompt!r}", param)
        tokens = len(self.generator.lm.encode_prompt(prompt))
        if tokens >= self.generator.lm.context_length:
            raise BadRequest(f"{param} has {tokens} tokens, over the model's context of "
                             f"{self.generator.lm.context_length}; shorten it", param, 400, "context_length_exceeded")
        return prompt

    # ------------------------------------------------------------------ handlers
    async def read_json(self, http: HTTPRequest, fields: set[str]) -> dict:
        try:
            body = json.loads(await http.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRequest(f"the request body is not valid JSON ({err}); send a JSON object") from err
        if not isinstance(body, dict):
            raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
        unknown = sorted(set(body) - fields)
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; the fields read here are {sorted(fields)}", unknown[0])
        return body

    async def chat(self, http: HTTPRequest) -> Response:
        return await self.answer(http, chat=True)

    async def completions(self, http: HTTPRequest) -> Response:
        return await self.answer(http, chat=False)

    @staticmethod
    def samples(prompt: str, n: int) -> list[str]:
        """The prompts of ``n`` answers: the prompt itself (the answer of ``n = 1``), then the same
        conversation as samples 1..n-1 (seeded apart)."""
        messages = prompt.messages if isinstance(prompt, Chat) else [{"role": "user", "content": prompt}]
        return [prompt] + [Chat(messages, sample=j) for j in range(1, n)]

    async def answer(self, http: HTTPRequest, chat: bool) -> Response:
        try:
            body = await self.read_json(http, CHAT_FIELDS if chat else COMPLETION_FIELDS)
            method = self.method_of(body)
            max_tokens, temperature, top_p, n = self.settings_of(body)
            if chat:
                prompt = self.prompt_of_chat(body)
            else:
                raw = body.get("prompt")
                raw = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
                prompt = self.checked_prompt(raw, "prompt")
            loop = asyncio.get_running_loop()
            requests = self.scheduler.submit_all([Request(p, method, max_tokens, temperature, top_p, loop)
                                                  for p in self.samples(prompt, n)])
        except BadRequest as err:
            return error_response(str(err), err.status, err.param, err.code)
        except QueueFull as err:
            return error_response(str(err), 429, None, "queue_full")
        model = body["model"]
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            return StreamingResponse(self.sse(http, requests, model, ident, chat), media_type="text/event-stream")
        try:
            answers = await asyncio.gather(*(self.whole(r) for r in requests))
        except Exception as err:  # the batch failed (a method error): this request gets a 500, the server goes on
            for r in requests:
                self.scheduler.cancel(r)
            return error_response(f"decoding failed: {type(err).__name__}: {err}", 500)
        choices = []
        for index, (content, last) in enumerate(answers):
            choice: dict[str, Any] = {"index": index, "finish_reason": last.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice["text"] = content
            choices.append(choice | ({"latentguard": self.record(method, last)} if n > 1 else {}))
        return JSONResponse({"id": ident, "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": model, "choices": choices,
                             "usage": self.usage(prompt, [last for _, last in answers]),
                             "latentguard": self.record(method, answers[0][1])})

    async def whole(self, request: Request) -> tuple[str, StreamEvent]:
        """A request's whole released text and its done event."""
        text, last = [], None
        async for event in self.events(request):
            text.append(event.delta)
            last = event if event.done else last
        assert last is not None and last.rollout is not None  # events() ends with the done event
        return "".join(text), last

    async def events(self, request: Request) -> AsyncIterator[StreamEvent]:
        """The request's events until its done event; a failed batch raises its error."""
        while True:
            item = await request.events.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def sse(self, http: HTTPRequest, requests: list[Request], model: str, ident: str,
                  chat: bool) -> AsyncIterator[str]:
        """Server-sent events of every choice as it is released (each chunk names its choice's index)."""
        created = int(time.time())

        def chunk(index: int, delta: str | None, finish: str | None, extra: dict | None = None,
                  role: bool = False) -> str:
            if chat:
                said = {"role": "assistant", "content": ""} if role else {} if delta is None else {"content": delta}
                body: dict[str, Any] = {"index": index, "delta": said, "finish_reason": finish, "logprobs": None}
            else:
                body = {"index": index, "text": delta or "", "finish_reason": finish, "logprobs": None}
            payload = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                       "created": created, "model": model, "choices": [body], **(extra or {})}
            return f"data: {json.dumps(payload)}\n\n"

        try:
            if chat:
                for index in range(len(requests)):
                    yield chunk(index, None, None, role=True)
            async for index, event in self.merged(requests):
                if await http.is_disconnected():
                    for r in requests:
                        self.scheduler.cancel(r)
                    return
                if event.delta:
                    yield chunk(index, event.delta, None)
                if event.done:
                    yield chunk(index, None, event.finish_reason, {"latentguard": self.record(requests[index].method, event)})
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):  # the client went away (cancelled, or the response closed us)
            for r in requests:
                self.scheduler.cancel(r)
            raise
        except Exception as err:  # a failed batch: an error event, then the end
            for r in requests:
                self.scheduler.cancel(r)
            yield f"data: {json.dumps({'error': {'message': f'decoding failed: {err}', 'type': 'server_error'}})}\n\n"
            yield "data: [DONE]\n\n"

    async def merged(self, requests: list[Request]) -> AsyncIterator[tuple[int, StreamEvent]]:
        """(choice index, event) of all ``requests`` in the order they come; a failed batch raises."""
        if len(requests) == 1:  # no tasks for the common case
            async for event in self.events(requests[0]):
                yield 0, event
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, request: Request) -> None:
            try:
                async for event in self.events(request):
                    queue.put_nowait((index, event))
            except Exception as err:
                queue.put_nowait((index, err))
            queue.put_nowait((index, None))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
        try:
            left = len(requests)
            while left:
                index, item = await queue.get()
                if item is None:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()

    def usage(self, prompt: str, events: list[StreamEvent]) -> dict:
        """Token counts: the prompt once, the released tokens of every choice."""
        prompt_tokens = len(self.generator.lm.encode_prompt(prompt))
        completion = sum(e.rollout.released_tokens for e in events if e.rollout is not None)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}

    @staticmethod
    def record(method: str, event: StreamEvent) -> dict:
        """The extension record of an answer: what the method did to it."""
        r = event.rollout
        assert r is not None
        return {"method": method, "interventions": r.interventions, "wait_tokens": r.wait_tokens,
                "guard_calls": r.guard_calls, "tokens": r.tokens, "released_tokens": r.released_tokens,
                "seconds": round(r.wall_time, 4)}

    async def models(self, http: HTTPRequest) -> Response:
        names = [self.model_id] + [f"{self.model_id}:{m}" for m in sorted(METHODS)]
        return JSONResponse({"object": "list", "data": [
            {"id": n, "object": "model", "created": int(self.started), "owned_by": "latentguard"} for n in names]})

    async def health(self, http: HTTPRequest) -> Response:
        return JSONResponse({"status": "ok", "model": self.model_id, "queue_depth": self.scheduler.queue_depth,
                             "rows_in_flight": self.scheduler.counters.rows_in_flight})

    async def metrics(self, http: HTTPRequest) -> Response:
        c = self.scheduler.counters
        lines = []
        for name, kind, value, doc in (
            ("requests_total", "counter", c.requests, "requests accepted"),
            ("requests_rejected_total", "counter", c.rejected, "requests answered 429 (queue full)"),
            ("requests_failed_total", "counter", c.failed, "requests whose batch failed"),
            ("requests_completed_total", "counter", c.completed, "requests answered to the end"),
            ("requests_cancelled_total", "counter", c.cancelled, "requests whose client went away"),
            ("queue_depth", "gauge", self.scheduler.queue_depth, "requests waiting"),
            ("rows_in_flight", "gauge", c.rows_in_flight, "requests decoding now"),
            ("released_tokens_total", "counter", c.released_tokens, "tokens released to clients"),
            ("interventions_total", "counter", c.interventions, "rollbacks, resamples and rewrites"),
            ("refusals_total", "counter", c.refusals, "answers that ended in a refusal or fallback"),
            ("batches_total", "counter", c.batches, "batches decoded"),
            ("decode_seconds_total", "counter", round(c.decode_seconds, 6), "seconds spent decoding batches"),
        ):
            lines += [f"# HELP latentguard_{name} {doc}", f"# TYPE latentguard_{name} {kind}", f"latentguard_{name} {value}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    def asgi(self) -> Starlette:
        """The ASGI application (the scheduler starts and stops with it)."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.scheduler.start()
            try:
                yield
            finally:
                await asyncio.get_running_loop().run_in_executor(None, self.scheduler.stop)

        return Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ], lifespan=lifespan)


def serve(config: ServeConfig) -> None:
    """Load the model and serve until SIGINT/SIGTERM (uvicorn finishes the requests in flight)."""
    import uvicorn

    app = App(config).asgi()
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=60)
