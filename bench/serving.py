"""Measure the ML tier on a private local Ray and print one table, each figure next to the direct-call
reference measured in the same run (run it under `flock /tmp/setu-bench.lock`).

    .venv/bin/python bench/serving.py                          # everything on the transformers engine
    .venv/bin/python bench/serving.py --sections embeddings --haproxy     # HAProxy ingress instead of Ray's
    .venv-vllm/bin/python bench/serving.py --sections generator --engines vllm   # the vLLM engine

1. direct: the model called in this process with one thread (what a replica gets): one text p50/p99, and
   texts/s encoding batches of 64.
2. overhead: one text through a handle and through HTTP, to the Embedder and to a no-op deployment with the
   same interface (transit alone); HTTP goes proxy (or HAProxy) -> Embedder, the embeddings route's own app.
3. batching: texts/s at 1/16/64 concurrent one-text callers, `@serve.batch` (64, no wait, one batch at a
   time) against max_batch_size=1, as a share of the direct batch-64 rate.
4. backends: torch against ONNX Runtime fp32/int8 on every curriculum text (min cosine; speed at 1 and 64).
5. generator tokens/s at 1/8/32 concurrent callers, for each engine asked for (the tests' tiny Llama, or
   --model PATH).

Replicas run as cluster/serve-local.yaml runs them: one intra-op thread, OMP_WAIT_POLICY=PASSIVE,
RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (the callers here are async), at the niceness of this process.
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
# What the local config gives every replica (cluster/serve-local.yaml, serving/local.py); read at import.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--serve-defaults" not in sys.argv:
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
# A private Ray temp dir holding our own auth token (never ~/.ray), set before ray is imported.
RAY_TEMP_DIR = Path(tempfile.mkdtemp(prefix="setu-bench-ray-"))

from serving.local import AUTH_TOKEN_FILE, use_auth_token  # imports no ray

use_auth_token(RAY_TEMP_DIR / AUTH_TOKEN_FILE)
if "--haproxy" in sys.argv:
    from serving.local import haproxy_environment

    os.environ.update(haproxy_environment(RAY_TEMP_DIR))

import httpx
import numpy as np
import ray
from ray import serve

from serving.config import EmbedderConfig, GeneratorConfig
from serving.deployments.embedder import Embedder, Noop, encode, load_sentence_transformer
from serving.deployments.generator import Generator
from serving.encoders import OnnxEncoder, TorchEncoder, set_torch_threads
from serving.generation import GenerationRequest
from serving.local import free_port

TEXT = "Plants make their food by photosynthesis in the green leaves."
ROWS: list[tuple[str, str, str]] = []
REFERENCE: dict[str, float] = {}


def row(section: str, what: str, value: str) -> None:
    ROWS.append((section, what, value))
    print(f"  {section:<24} {what:<50} {value}", flush=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


async def closed_loop(call: Callable[[], Awaitable[Any]], callers: int, seconds: float) -> float:
    """Calls per second with `callers` concurrent loops for `seconds`."""
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


def timed(call: Callable[[], Any], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


async def timed_async(call: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    for _ in range(min(20, samples)):
        await call()
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


def rate(call: Callable[[list[str]], Any], texts: list[str], seconds: float) -> float:
    """Texts per second encoding `texts` as one batch, again and again."""
    call(texts)
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call(texts)
        done += len(texts)
    return done / (time.perf_counter() - started)


def batch_texts(size: int) -> list[str]:
    return [f"{TEXT} (caller {i})" for i in range(size)]


def bench_direct(seconds: float, samples: int) -> Any:
    set_torch_threads(1)
    model = load_sentence_transformer(EmbedderConfig(device="cpu"))
    encoder = TorchEncoder(model)
    d50, d99 = percentiles(timed(lambda: encoder.encode([TEXT]), samples))
    REFERENCE["p50"] = d50
    row("direct (1 thread)", "one text p50 / p99 (ms)", f"{d50 * 1e3:6.2f} / {d99 * 1e3:6.2f}  ({load()})")
    batched = rate(encoder.encode, batch_texts(64), seconds)
    REFERENCE["batch64"] = batched
    row("direct (1 thread)", "batch of 64, texts/s", f"{batched:8.1f}  ({load()})")
    st = rate(lambda texts: encode(model, texts), batch_texts(64), seconds / 2)
    row("direct (1 thread)", "sentence-transformers model.encode, batch 64", f"{st:8.1f} texts/s")
    return model


def embedder_app(name: str, batch_size: int, backend: str = "torch") -> Any:
    return Embedder.options(
        name=name,
        max_ongoing_requests=256,
        max_queued_requests=4096,
        user_config={"max_batch_size": batch_size, "batch_wait_timeout_s": 0.0},
        ray_actor_options={"num_cpus": 1},
        logging_config={"enable_access_log": False},
    ).bind(EmbedderConfig(device="cpu", backend=backend))


async def bench_overhead(samples: int, http_port: int) -> None:
    embedder = serve.run(embedder_app("Embedder", 64), name="embed", route_prefix="/v1/embeddings")
    noop = serve.run(
        Noop.options(logging_config={"enable_access_log": False}).bind(), name="noop", route_prefix="/noop"
    )
    d50 = REFERENCE["p50"]
    series: dict[str, list[float]] = {}
    series["no-op via handle"] = await timed_async(lambda: noop.embed.remote([TEXT]), samples)
    series["Embedder via handle"] = await timed_async(lambda: embedder.embed.remote([TEXT]), samples)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
        payload = {"input": TEXT, "encoding_format": "base64"}

        async def post(path: str) -> None:
            response = await client.post(path, json=payload)
            assert response.status_code == 200, response.text

        series["no-op via HTTP"] = await timed_async(lambda: post("/noop"), samples)
        series["Embedder via HTTP"] = await timed_async(lambda: post("/v1/embeddings"), samples)
    for label, values in series.items():
        p50, p99 = percentiles(values)
        extra = f"+{(p50 - d50) * 1e3:.2f} over direct" if label.startswith("Embedder") else "transit alone"
        row(
            "one text (ms)",
            f"{label} p50 / p99",
            f"{p50 * 1e3:6.2f} / {p99 * 1e3:6.2f}  ({extra}; {load()})",
        )
    row("one text (ms)", "direct reference p50", f"{d50 * 1e3:6.2f}")
    serve.delete("noop")


async def bench_batching(seconds: float) -> None:
    batched = serve.get_deployment_handle("Embedder", app_name="embed")
    single = serve.run(embedder_app("Single", 1), name="single", route_prefix=None)
    reference = REFERENCE["batch64"]
    for callers in (1, 16, 64):
        rates = {}
        for label, handle in (("batched", batched), ("single", single)):
            await closed_loop(lambda h=handle: h.embed.remote([TEXT]), callers, 1.0)  # warm up
            rates[label] = await closed_loop(lambda h=handle: h.embed.remote([TEXT]), callers, seconds)
        fast, slow = rates["batched"], rates["single"]
        row(
            "batching (texts/s)",
            f"{callers:>2} callers: batched vs max_batch_size=1",
            f"{fast:7.1f} vs {slow:6.1f} = {fast / slow:.1f}x; {fast / reference:.0%} of direct batch 64"
            f" ({load()})",
        )
    counts = await batched.batch_size_counts.remote()
    sizes = sorted(counts.items())
    row("batching", "model calls by batch size (size: calls)", ", ".join(f"{k}: {v}" for k, v in sizes))
    serve.delete("single")
    serve.delete("embed")


def curriculum_texts() -> list[str]:
    from api.curriculum.loader import embedding_text, read_seed

    return [embedding_text(s.kind, s.text, s.keywords) for s in read_seed().standards]


def bench_backends(model: Any, seconds: float, samples: int) -> None:
    texts = curriculum_texts()
    torch_encoder = TorchEncoder(model)

    def all_vectors(encoder: Any) -> Any:
        return np.concatenate([encoder.encode(texts[i : i + 64])[0] for i in range(0, len(texts), 64)])

    reference = all_vectors(torch_encoder)
    st = encode(model, texts)
    row(
        "backends",
        f"torch here vs model.encode, {len(texts)} curriculum texts",
        f"min cosine {float((reference * st).sum(1).min()):.6f}",
    )
    encoders: dict[str, Any] = {"torch": torch_encoder}
    for backend in ("onnx", "onnx-int8"):
        config = EmbedderConfig(device="cpu", backend=backend)  # type: ignore[arg-type]
        encoders[backend] = OnnxEncoder(model, config, quantize=backend == "onnx-int8")
    speeds: dict[str, tuple[float, float, float]] = {}
    for name, encoder in encoders.items():
        p50, _ = percentiles(timed(lambda e=encoder: e.encode([TEXT]), samples))
        short = rate(encoder.encode, batch_texts(64), seconds / 2)
        speeds[name] = (p50, short, rate(encoder.encode, texts[:64], seconds / 2))
    base = speeds["torch"]
    for name, encoder in encoders.items():
        cosine = float((all_vectors(encoder) * reference).sum(1).min()) if name != "torch" else 1.0
        p50, short, long = speeds[name]
        row(
            f"backend {name}",
            "min cosine; one text p50; 64 short / 64 curriculum texts/s",
            f"{cosine:.4f}; {p50 * 1e3:5.2f} ms ({base[0] / p50:.2f}x); {short:6.1f}/s"
            f" ({short / base[1]:.2f}x); {long:5.1f}/s ({long / base[2]:.2f}x) ({load()})",
        )


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
    model = None
    if {"embeddings", "backends"} & set(args.sections):
        model = bench_direct(args.seconds, args.samples)
    if "embeddings" in args.sections:
        await bench_overhead(args.samples, http_port)
        await bench_batching(args.seconds)
    if "backends" in args.sections:
        bench_backends(model, args.seconds, args.samples)
    if "generator" in args.sections:
        generator_model = args.model or tiny_model()
        for engine in args.engines:
            options = (
                {"max_model_len": 512, "dtype": "float32", "enforce_eager": True} if engine == "vllm" else {}
            )
            await bench_generator(engine, generator_model, args.seconds, options)
    await serve.shutdown_async()  # on this loop: the handles above are bound to it


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", default=["embeddings", "backends", "generator"])
    parser.add_argument("--engines", nargs="+", default=["transformers"])
    parser.add_argument("--model", help="generation model (default: the tests' tiny Llama)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--samples", type=int, default=300, help="latency samples")
    parser.add_argument("--haproxy", action="store_true", help="RAY_SERVE_ENABLE_HA_PROXY=1 (read at import)")
    parser.add_argument(
        "--serve-defaults", action="store_true", help="no RAY_SERVE_THROUGHPUT_OPTIMIZED (read at import)"
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
    knobs = ", ".join(
        f"{name}={os.environ.get(name, '')}"
        for name in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY", "OMP_WAIT_POLICY")
    )
    print(f"ML tier bench on {os.cpu_count()} cores ({load()} at start; {knobs})", flush=True)
    try:
        asyncio.run(run(args))
    finally:
        ray.shutdown()
        if args.haproxy:
            from serving.local import stop_haproxy

            stop_haproxy(temp_dir)  # it outlives Ray (a session of its own)
        shutil.rmtree(temp_dir, ignore_errors=True)
    print("\n| section | measurement | result |\n|---|---|---|")
    for section, what, value in ROWS:
        print(f"| {section} | {what.strip()} | {value.strip()} |")


if __name__ == "__main__":
    main()
