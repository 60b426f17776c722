"""Measure the ML tier on a private local Ray and print one table.

    .venv/bin/python bench/serving.py                          # embeddings, overhead, transformers engine
    .venv-vllm/bin/python bench/serving.py --sections generator --engines vllm   # the vLLM engine

1. Embedding throughput, `@serve.batch` (max_batch_size 64) against max_batch_size 1, at 1/16/64 callers.
2. Serve's overhead over a direct model call (one short text), p50/p99: through a handle, and through HTTP
   (proxy -> Ingress -> Embedder).
3. Generator tokens/s at 1/8/32 concurrent callers, for each engine asked for (the tiny Llama from the tests,
   or --model PATH).
"""

# ruff: noqa: E402 (Ray's token settings come before `import ray`)
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Ray runs workers at nice 15; the direct call runs at 0. Compare like with like.
os.environ.setdefault("RAY_worker_niceness", "0")
# A private Ray temp dir holding our own auth token (never ~/.ray), set before ray is imported.
RAY_TEMP_DIR = Path(tempfile.mkdtemp(prefix="setu-bench-ray-"))

from serving.local import AUTH_TOKEN_FILE, use_auth_token  # imports no ray

use_auth_token(RAY_TEMP_DIR / AUTH_TOKEN_FILE)

import httpx
import ray
from ray import serve

from serving.config import AppConfig, EmbedderConfig, GeneratorConfig
from serving.deployments.embedder import Embedder, encode, load_sentence_transformer
from serving.deployments.generator import Generator
from serving.deployments.ingress import Ingress
from serving.deployments.translator import Translator
from serving.generation import GenerationRequest
from serving.local import free_port

TEXT = "Plants make their food by photosynthesis in the green leaves."
ROWS: list[tuple[str, str, str]] = []


def row(section: str, what: str, value: str) -> None:
    ROWS.append((section, what, value))
    print(f"  {section:<26} {what:<42} {value}", flush=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def closed_loop(call: Callable[[], Awaitable[Any]], callers: int, seconds: float) -> float:
    """Requests per second with `callers` concurrent loops for `seconds`."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(callers)))
    return done / (time.perf_counter() - started)


def embedder_app(name: str, batch_size: int, wait_s: float, cpus: float) -> Any:
    return Embedder.options(
        name=name,
        max_ongoing_requests=256,
        max_queued_requests=4096,
        user_config={"max_batch_size": batch_size, "batch_wait_timeout_s": wait_s},
        ray_actor_options={"num_cpus": cpus},
    ).bind(EmbedderConfig(device="cpu"))


async def bench_embeddings(seconds: float, cpus: float) -> None:
    batched = serve.run(embedder_app("Batched", 64, 0.002, cpus), name="batched", route_prefix=None)
    single = serve.run(embedder_app("Single", 1, 0.0, cpus), name="single", route_prefix=None)
    for callers in (1, 16, 64):
        rates = {}
        for label, handle in (("batch 64", batched), ("batch 1", single)):
            await closed_loop(lambda h=handle: h.embed.remote([TEXT]), callers, 1.0)  # warm up
            rates[label] = await closed_loop(lambda h=handle: h.embed.remote([TEXT]), callers, seconds)
        fast, slow = rates["batch 64"], rates["batch 1"]
        row(
            "embeddings (texts/s)",
            f"{callers:>2} callers: batched vs max_batch_size=1",
            f"{fast:8.1f} vs {slow:7.1f} = {fast / slow:.1f}x",
        )
    serve.delete("batched")


async def bench_overhead(samples: int, cpus: float, http_port: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))  # what Ray gives the replica (OMP_NUM_THREADS = num_cpus)
    model = load_sentence_transformer(EmbedderConfig(device="cpu"))
    direct = []
    for _ in range(samples):
        started = time.perf_counter()
        encode(model, [TEXT])
        direct.append(time.perf_counter() - started)
    handle = serve.get_deployment_handle("Single", app_name="single")
    through_handle = []
    for _ in range(samples):
        started = time.perf_counter()
        await handle.embed.remote([TEXT])
        through_handle.append(time.perf_counter() - started)
    config = AppConfig.model_validate(
        {"generator": {"model": "/nonexistent"}}
    )  # HTTP path needs no generator
    small = {"num_cpus": 0.1}
    embedder = embedder_app("Embedder", 1, 0.0, cpus)
    generator = Generator.options(ray_actor_options=small).bind(config.generator)
    translator = Translator.options(ray_actor_options=small).bind(config.translator, generator, 64)
    ingress = Ingress.options(ray_actor_options=small, max_ongoing_requests=256).bind(
        config, embedder, generator, translator
    )
    serve.run(ingress, name="http", route_prefix="/")
    through_http = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
        for _ in range(20):
            await client.post("/v1/embeddings", json={"input": TEXT})
        for _ in range(samples):
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"input": TEXT})
            through_http.append(time.perf_counter() - started)
            assert response.status_code == 200
    d50, d99 = percentiles(direct)
    row("one text, latency (ms)", "direct model call p50 / p99", f"{d50 * 1e3:6.2f} / {d99 * 1e3:6.2f}")
    for label, series in (("handle", through_handle), ("HTTP", through_http)):
        p50, p99 = percentiles(series)
        row(
            "one text, latency (ms)",
            f"via {label} p50 / p99 (overhead at p50)",
            f"{p50 * 1e3:6.2f} / {p99 * 1e3:6.2f}  (+{(p50 - d50) * 1e3:.2f})",
        )
    serve.delete("http")
    serve.delete("single")


async def bench_generator(engine: str, model: str, seconds: float, options: dict[str, Any]) -> None:
    config = GeneratorConfig(engine=engine, model=model, served_name="bench", engine_options=options)
    handle = serve.run(
        Generator.options(
            name=f"Generator-{engine}", max_ongoing_requests=64, ray_actor_options={"num_cpus": 1}
        ).bind(config),
        name=f"gen-{engine}",
        route_prefix=None,
    )
    card = await handle.describe.remote()
    if card["status"] != "available":
        row(f"generator {engine}", "unavailable", card.get("reason", "?"))
        return
    request = GenerationRequest(
        messages=[{"role": "user", "content": "What is 3 plus 4?"}], max_tokens=32, temperature=0.7
    )
    for callers in (1, 8, 32):
        tokens = 0

        async def one() -> None:
            nonlocal tokens
            completion = await handle.complete.remote(request)
            tokens += completion.completion_tokens

        await closed_loop(one, callers, 1.0)
        tokens = 0
        started = time.perf_counter()
        await closed_loop(one, callers, seconds)
        row(
            f"generator {engine}",
            f"{callers:>2} concurrent callers",
            f"{tokens / (time.perf_counter() - started):8.1f} tokens/s",
        )
    serve.delete(f"gen-{engine}")


def tiny_model() -> str:
    from tests.utils.serving import cached_tiny_llama

    cache = Path(tempfile.gettempdir()) / "setu-bench-models"
    cache.mkdir(exist_ok=True)
    return str(cached_tiny_llama(cache))


async def run(args: argparse.Namespace) -> None:
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    if "embeddings" in args.sections:
        await bench_embeddings(args.seconds, args.embedder_cpus)
        await bench_overhead(args.samples, args.embedder_cpus, http_port)
    if "generator" in args.sections:
        model = args.model or tiny_model()
        for engine in args.engines:
            options = (
                {"max_model_len": 512, "dtype": "float32", "enforce_eager": True} if engine == "vllm" else {}
            )
            await bench_generator(engine, model, args.seconds, options)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", default=["embeddings", "generator"])
    parser.add_argument("--engines", nargs="+", default=["transformers"])
    parser.add_argument("--model", help="generation model (default: the tests' tiny Llama)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--samples", type=int, default=300, help="latency samples")
    parser.add_argument(
        "--embedder-cpus", type=float, default=2, help="ray_actor_options.num_cpus (torch threads)"
    )
    args = parser.parse_args()
    temp_dir = RAY_TEMP_DIR
    ray.init(
        num_cpus=8,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        namespace="serve",
        log_to_driver=False,
        runtime_env={
            "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        },
    )
    print(
        f"ML tier bench on {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at start)",
        flush=True,
    )
    try:
        asyncio.run(run(args))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print("\n| section | measurement | result |\n|---|---|---|")
    for section, what, value in ROWS:
        print(f"| {section} | {what.strip()} | {value.strip()} |")


if __name__ == "__main__":
    main()
