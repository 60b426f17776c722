"""Translator: IndicTrans2-style seq2seq models by direction; otherwise the Generator, strictly prompted."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config import Direction, TranslatorConfig, torch_device
from serving.errors import ModelUnavailable, describe_error
from serving.generation import GenerationRequest
from serving.languages import LANGUAGES
from serving.metrics import serving_metrics

_MAX_NEW_TOKENS = 512


def direction_of(source: str, target: str) -> Direction:
    if source == "en":
        return "en-indic"
    return "indic-en" if target == "en" else "indic-indic"


def translation_prompt(text: str, source: str, target: str, max_tokens: int) -> GenerationRequest:
    """A strict instruction for a general instruction-tuned model."""
    source_name, target_name = LANGUAGES[source].name, LANGUAGES[target].name
    instruction = (
        f"You are a translation engine. Translate the user's text from {source_name} to {target_name} "
        f"({target_name} script). Reply with the translation only: no quotes, notes, explanations or "
        "transliteration. Keep numbers, names, line breaks and formatting as they are."
    )
    return GenerationRequest(
        messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}],
        max_tokens=max_tokens,
        temperature=0.0,
    )


def translator_card(config: TranslatorConfig, unavailable: dict[Direction, str]) -> dict[str, Any]:
    """The model card: which engine serves each direction (a seq2seq model, or the generator)."""
    engines: dict[str, str] = {}
    for direction in ("en-indic", "indic-en", "indic-indic"):
        model = config.models.get(direction)  # type: ignore[call-overload]
        engines[direction] = (
            f"unavailable: {unavailable[direction]}" if direction in unavailable else (model or "generator")
        )
    return {
        "id": config.served_name,
        "kind": "translation",
        "languages": [{"code": lang.code, "name": lang.name} for lang in LANGUAGES.values()],
        "engines": engines,
        "status": "unavailable" if unavailable else "available",
    }


async def through_generator(
    generator: DeploymentHandle, text: str, source: str, target: str, max_completion_tokens: int
) -> str:
    """One text translated by the general generator with a strict prompt."""
    # Indic scripts take several tokens per character in most vocabularies.
    budget = min(max_completion_tokens, 32 + 4 * len(text))
    completion = await generator.complete.remote(translation_prompt(text, source, target, budget))
    return str(completion.text).strip()


class Seq2SeqTranslator:
    """One IndicTrans2-family model (or any seq2seq model taking `src_tag tgt_tag text` input)."""

    def __init__(self, model: str, device: str) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model, trust_remote_code=True).to(device).eval()
        self.device = device
        try:  # IndicTrans2's own normalisation and script handling, when installed
            from IndicTransToolkit.processor import IndicProcessor

            self.processor: Any = IndicProcessor(inference=True)
        except ImportError:
            self.processor = None

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        import torch

        src, tgt = LANGUAGES[source].flores, LANGUAGES[target].flores
        if self.processor is not None:
            inputs = self.processor.preprocess_batch(texts, src_lang=src, tgt_lang=tgt)
        else:
            inputs = [f"{src} {tgt} {text}" for text in texts]
        encoded = self.tokenizer(inputs, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**encoded, max_new_tokens=_MAX_NEW_TOKENS, num_beams=1)
        decoded: list[str] = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        if self.processor is not None:
            decoded = self.processor.postprocess_batch(decoded, lang=tgt)
        return [text.strip() for text in decoded]


@serve.deployment(name="Translator")
class Translator:
    def __init__(
        self, config: TranslatorConfig, generator: DeploymentHandle | None, max_completion_tokens: int
    ) -> None:
        self.config = config
        self.generator = generator
        self.max_completion_tokens = max_completion_tokens
        self.metrics = serving_metrics()
        self.models: dict[Direction, Seq2SeqTranslator] = {}
        self.unavailable: dict[Direction, str] = {}
        device = torch_device(config.device)
        for direction, model in config.models.items():
            started = time.perf_counter()
            tags = {"deployment": "Translator", "model": model}
            try:
                self.models[direction] = Seq2SeqTranslator(model, device)
            except Exception as error:  # report the direction as unavailable; the rest keeps working
                self.unavailable[direction] = f"could not load {model}: {describe_error(error)}"
            self.metrics.model_load_seconds.set(time.perf_counter() - started, tags=tags)
            self.metrics.model_available.set(int(direction in self.models), tags=tags)

    def describe(self) -> dict[str, Any]:
        return translator_card(self.config, self.unavailable)

    async def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        if source == target:
            return list(texts)
        direction = direction_of(source, target)
        if direction in self.unavailable:
            raise ModelUnavailable(f"translation {direction}: {self.unavailable[direction]}")
        if direction in self.models:
            enqueued = time.perf_counter()
            return list(
                await asyncio.gather(*(self.translate_batch((t, source, target, enqueued)) for t in texts))
            )
        return list(await asyncio.gather(*(self._through_generator(text, source, target) for text in texts)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def translate_batch(self, items: list[tuple[str, str, str, float]]) -> list[str]:
        """Items of one language pair go through their model together."""
        started = time.perf_counter()
        tags = {"deployment": "Translator"}
        self.metrics.batch_size.observe(len(items), tags=tags)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, (_, source, target, enqueued) in enumerate(items):
            groups[(source, target)].append(index)
            self.metrics.queue_wait.observe(started - enqueued, tags=tags)
        results = [""] * len(items)
        for (source, target), indexes in groups.items():
            model = self.models[direction_of(source, target)]
            texts = [items[i][0] for i in indexes]
            for index, text in zip(
                indexes, await asyncio.to_thread(model.translate, texts, source, target), strict=True
            ):
                results[index] = text
        return results

    async def _through_generator(self, text: str, source: str, target: str) -> str:
        if self.generator is None:
            raise ModelUnavailable("translation through the generator: no generator is deployed")
        return await through_generator(self.generator, text, source, target, self.max_completion_tokens)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.translate_batch.set_max_batch_size(int(user_config.get("max_batch_size", 16)))
        self.translate_batch.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))

    def check_health(self) -> None:
        """Healthy once constructed: unavailable directions are reported, not fatal."""
