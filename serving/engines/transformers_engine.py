"""Generation with Hugging Face `transformers`, for machines without vLLM.

Requests that arrive together and share sampling settings are decoded as one left-padded batch (static
batching; vLLM does better with continuous batching). Each row stops on its own `max_tokens`, stop sequences
or end-of-sequence token. One model call runs at a time, in a worker thread, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from serving.generation import Completion, Delta, GenerationRequest, cut_at_stop

BatchObserver = Callable[[int, list[float]], None]
"""Called with the batch size and each request's seconds in the queue."""


@dataclass
class _Job:
    request: GenerationRequest
    future: asyncio.Future[Completion]
    enqueued: float = field(default_factory=time.perf_counter)
    tokens: asyncio.Queue[int] | None = None  # set for streamed requests

    def joins(self, other: _Job) -> bool:
        """Whether `other` can be decoded in the same batch."""
        return (
            self.tokens is None
            and other.tokens is None
            and self.request.temperature == other.request.temperature
            and self.request.top_p == other.request.top_p
        )


class _RowLimits(StoppingCriteria):
    """Per-row stop: its own max_tokens, or a stop sequence in what it generated."""

    def __init__(self, tokenizer: Any, prompt_length: int, requests: list[GenerationRequest]) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.max_tokens = [request.max_tokens for request in requests]
        self.stops = [request.stop for request in requests]
        self.stopped_at: list[int | None] = [None] * len(requests)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            if self.stopped_at[row] is not None:
                done[row] = True
                continue
            hit = generated >= self.max_tokens[row]
            if not hit and self.stops[row]:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length :], skip_special_tokens=True)
                hit = cut_at_stop(text, self.stops[row])[1]
            if hit:
                self.stopped_at[row] = generated
                done[row] = True
        return done  # type: ignore[return-value]


class _TokenForwarder(BaseStreamer):
    """Hands each generated token id from the worker thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tokens: asyncio.Queue[int]) -> None:
        self.loop = loop
        self.tokens = tokens
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.tokens.put_nowait, int(token))

    def end(self) -> None:
        pass


class TransformersEngine:
    name = "transformers"
    supports_json_schema = False

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(device).eval()
        self.device = device
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._queue: asyncio.Queue[_Job] | None = None
        self._carried: deque[_Job] = deque()
        self._worker: asyncio.Task[None] | None = None

    # -- public API -------------------------------------------------------------------------------------

    async def complete(self, request: GenerationRequest) -> Completion:
        job = _Job(request, asyncio.get_running_loop().create_future())
        self._submit(job)
        return await job.future

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        job = _Job(request, asyncio.get_running_loop().create_future(), tokens=asyncio.Queue())
        self._submit(job)
        assert job.tokens is not None
        ids: list[int] = []
        sent = ""
        holdback = max((len(s) for s in request.stop), default=1) - 1
        while not job.future.done() or not job.tokens.empty():
            getter = asyncio.ensure_future(job.tokens.get())
            await asyncio.wait({getter, job.future}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            ids.append(getter.result())
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), request.stop)
            safe = text if stopped else text[: max(len(sent), len(text) - holdback)]
            if len(safe) > len(sent) and not safe.endswith("\ufffd"):  # wait for whole characters
                yield Delta(safe[len(sent) :])
                sent = safe
        completion = job.future.result()
        rest = completion.text[len(sent) :] if completion.text.startswith(sent) else ""
        yield Delta(
            rest,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )

    async def check_health(self) -> None:
        if self._worker is not None and self._worker.done() and not self._worker.cancelled():
            raise RuntimeError(f"generation worker stopped: {self._worker.exception()!r}")

    async def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # -- batching -----------------------------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="transformers-generate")
        self._queue.put_nowait(job)

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        first = self._carried.popleft() if self._carried else await self._queue.get()
        batch = [first]
        if first.tokens is not None:
            return batch
        deadline = time.perf_counter() + self.batch_wait_s
        skipped: list[_Job] = []
        while len(batch) < self.max_batch_size:
            if self._carried:
                job = self._carried.popleft()
            else:
                try:
                    job = await asyncio.wait_for(self._queue.get(), max(deadline - time.perf_counter(), 0))
                except TimeoutError:
                    break
            (batch if first.joins(job) else skipped).append(job)
        self._carried.extendleft(reversed(skipped))
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            live = [job for job in batch if not job.future.done()]  # drop callers that went away
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), [started - job.enqueued for job in live])
            streamer = _TokenForwarder(loop, live[0].tokens) if live[0].tokens is not None else None
            try:
                results = await loop.run_in_executor(
                    self._executor, self._generate, [job.request for job in live], streamer
                )
            except Exception as error:  # the batch failed: every caller in it gets the error
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for job, result in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    # -- the model call (worker thread) -----------------------------------------------------------------

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            prompt: str = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return prompt
        lines = [f"{message['role']}: {message['content']}" for message in messages]
        return "\n".join([*lines, "assistant:"])

    @torch.inference_mode()
    def _generate(self, requests: list[GenerationRequest], streamer: BaseStreamer | None) -> list[Completion]:
        prompts = [self._prompt(request.messages) for request in requests]
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        prompt_length = encoded.input_ids.shape[1]
        limits = _RowLimits(self.tokenizer, prompt_length, requests)
        sampling = requests[0].temperature > 0
        config = GenerationConfig(
            max_new_tokens=max(request.max_tokens for request in requests),
            do_sample=sampling,
            temperature=requests[0].temperature if sampling else None,
            top_p=requests[0].top_p if sampling else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id,
        )
        output = self.model.generate(
            **encoded,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([limits]),
            streamer=streamer,
        )
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        results = []
        for row, request in enumerate(requests):
            generated = output[row, prompt_length:].tolist()
            end = next((i + 1 for i, token in enumerate(generated) if token in eos_ids), None)
            stopped_at = limits.stopped_at[row]
            count = min(x for x in (end, stopped_at, len(generated), request.max_tokens) if x is not None)
            text, stopped = cut_at_stop(
                self.tokenizer.decode(generated[:count], skip_special_tokens=True), request.stop
            )
            finished = end is not None and end <= count
            results.append(
                Completion(
                    text=text,
                    prompt_tokens=int(encoded.attention_mask[row].sum()),
                    completion_tokens=count,
                    finish_reason="stop" if stopped or finished else "length",
                )
            )
        return results
