"""A real local Ray + Serve for the test session, and the tiny generation model it serves.

The model is a 2-layer Llama with a byte-level BPE tokenizer trained here, then trained for a few hundred
steps on templated chats (arithmetic answers, JSON answers for the schema prompt, a few English-Hindi
words for the translation prompt), so its greedy output is readable and deterministic. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.utils.servers import free_port

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

# The schema the tiny model learned to answer (tests ask for it through response_format).
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
WORDS_HI = {
    "water": "पानी",
    "book": "किताब",
    "school": "विद्यालय",
    "teacher": "शिक्षक",
    "student": "छात्र",
    "sun": "सूरज",
    "tree": "पेड़",
    "river": "नदी",
}
MODEL_VERSION = "tiny-llama-v3"  # bump when the corpus or architecture changes (invalidates the cache)


def arithmetic_question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def _conversations() -> list[list[dict[str, str]]]:
    from serving.deployments.translator import translation_prompt
    from serving.generation import GenerationRequest, with_schema_instruction

    chats: list[list[dict[str, str]]] = []
    for a in range(10):
        for b in range(10):
            question = {"role": "user", "content": arithmetic_question(a, b)}
            chats.append([question, {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}])
            asked = with_schema_instruction(
                GenerationRequest(messages=[question], json_schema=ANSWER_SCHEMA), None
            )
            chats.append(
                [*asked.messages, {"role": "assistant", "content": json.dumps({"answer": str(a + b)})}]
            )
    for english, hindi in WORDS_HI.items():
        prompt = translation_prompt(english, "en", "hi", 64).messages
        for _ in range(8):
            chats.append([*prompt, {"role": "assistant", "content": hindi}])
    return chats


def build_tiny_llama(
    directory: Path, *, hidden: int = 64, heads: int = 1, layers: int = 2, steps: int = 200
) -> Path:
    """Train the tokenizer and the model, save both to `directory` (loadable with local_files_only).

    One head of 64 dimensions: vLLM's CPU attention kernels want a head size of 64 or more."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    random.seed(0)
    torch.manual_seed(0)
    texts = _render(_conversations())
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=768,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"

    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    encoded = [fast(text, add_special_tokens=False).input_ids for text in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        batch = random.sample(encoded, 16)
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), fast.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, sequence in enumerate(batch):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def _render(chats: list[list[dict[str, str]]]) -> list[str]:
    from jinja2 import Template

    template = Template(CHAT_TEMPLATE)
    return [template.render(messages=chat, add_generation_prompt=False) for chat in chats]


def cached_tiny_llama(cache_root: Path, **sizes: int) -> Path:
    """The tiny model from `cache_root` (built there on first use, atomically)."""
    name = MODEL_VERSION + "".join(f"-{key}{value}" for key, value in sorted(sizes.items()))
    target = cache_root / name
    if (target / "config.json").exists():
        return target
    building = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_root))
    build_tiny_llama(building, **sizes)
    try:
        building.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(building, ignore_errors=True)
    return target


def serve_test_config(model_dir: Path, http_port: int) -> dict[str, Any]:
    """The test session's Serve config: real MiniLM, the tiny Llama on the transformers engine, translation
    through the generator. Small CPU shares so everything fits on a 2-core machine."""
    small = {"num_cpus": 0.25}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [
            {
                "name": "setu",
                "route_prefix": "/",
                "import_path": "serving.app:build_app",
                "args": {
                    "generator": {
                        "engine": "transformers",
                        "model": str(model_dir),
                        "served_name": "tiny-llama",
                    },
                    "limits": {"max_embedding_inputs": 64, "max_embedding_chars": 2000},
                },
                "deployments": [
                    {
                        "name": "Ingress",
                        "num_replicas": 1,
                        "max_ongoing_requests": 256,
                        "max_queued_requests": 1000,
                        "ray_actor_options": small,
                    },
                    {
                        "name": "Embedder",
                        "num_replicas": 1,
                        "max_ongoing_requests": 256,
                        "max_queued_requests": 1000,
                        "user_config": {"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
                        "ray_actor_options": small,
                    },
                    {
                        "name": "Generator",
                        "num_replicas": 1,
                        "max_ongoing_requests": 64,
                        "max_queued_requests": 256,
                        "ray_actor_options": small,
                    },
                    {"name": "Translator", "num_replicas": 1, "ray_actor_options": small},
                ],
            }
        ],
    }


def use_session_ray_token(directory: Path) -> Path:
    """Give this test process (and the Ray it starts) a token file of its own under `directory`, so
    `ray.init()` neither reads nor writes `~/.ray/auth_token`. Call before the first `import ray`
    (conftest's `pytest_configure` does)."""
    from serving.local import AUTH_TOKEN_FILE, use_auth_token

    token_path = directory / AUTH_TOKEN_FILE
    use_auth_token(token_path)
    return token_path


@contextmanager
def local_serve(config: dict[str, Any], *, num_cpus: int = 4) -> Iterator[str]:
    """A private Ray (own temp dir, no dashboard) running `config`; yields the HTTP URL, tears all down."""
    temp_dir = Path(tempfile.mkdtemp(prefix="setu-ray-"))
    if not os.environ.get("RAY_AUTH_TOKEN_PATH"):  # outside pytest: a token in the private temp dir
        use_session_ray_token(temp_dir)
    import ray
    from ray import serve

    from serving.runtime import deploy

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        namespace="serve",
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
    )
    try:
        deploy(config)
        http = config["http_options"]
        yield f"http://{http['host']}:{http['port']}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def serving_session(cache_root: Path) -> Iterator[str]:
    """What the `serving_url` fixture yields: the test app running on a free port."""
    model_dir = cached_tiny_llama(cache_root)
    with local_serve(serve_test_config(model_dir, free_port())) as url:
        yield url
