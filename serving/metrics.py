"""Our own metrics, through Ray's metrics API (exported next to Ray's `ray_serve_*` with a `ray_` prefix).

Names and labels are documented in docs/scaling.md; alert rules use them exactly.
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
_WAIT_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]


class ServingMetrics:
    """One set per replica process; every series carries the deployment's name."""

    def __init__(self) -> None:
        self.batch_size = Histogram(
            "setu_ml_batch_size",
            description="Inputs run through a model in one call.",
            boundaries=_SIZE_BOUNDARIES,
            tag_keys=("deployment",),
        )
        self.queue_wait = Histogram(
            "setu_ml_queue_wait_seconds",
            description="Time an input waited in the replica before its batch started.",
            boundaries=_WAIT_BOUNDARIES,
            tag_keys=("deployment",),
        )
        self.batch_queue_length = Gauge(
            "setu_ml_batch_queue_length",
            description="Inputs still queued in the replica when its latest batch started.",
            tag_keys=("deployment",),
        )
        self.tokens_generated = Counter(
            "setu_ml_tokens_generated",
            description="Completion tokens generated.",
            tag_keys=("deployment", "model", "engine"),
        )
        self.prompt_tokens = Counter(
            "setu_ml_prompt_tokens",
            description="Prompt tokens read.",
            tag_keys=("deployment", "model", "engine"),
        )
        self.model_load_seconds = Gauge(
            "setu_ml_model_load_seconds",
            description="Seconds the replica took to load its model.",
            tag_keys=("deployment", "model"),
        )
        self.model_available = Gauge(
            "setu_ml_model_available",
            description="1 when the replica's model is loaded and answering, 0 when it failed to load.",
            tag_keys=("deployment", "model"),
        )
        self.errors = Counter(
            "setu_ml_errors",
            description="Requests that failed, by kind (invalid_input, model_unavailable, overloaded, "
            "invalid_output, internal).",
            tag_keys=("deployment", "kind"),
        )


@cache
def serving_metrics() -> ServingMetrics:
    """The replica's metrics, created on first use (Ray metrics must be created inside the worker)."""
    return ServingMetrics()
