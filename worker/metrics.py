"""Worker metrics for Prometheus, in prometheus-client's multiprocess mode.

A worker is several processes: Celery's main process, the pool children that run tasks (forked,
or spawned, and replaced now and then), and the maintenance process (worker.maintenance). Each
child counts into files of its own in one folder per worker (`PROMETHEUS_MULTIPROC_DIR`, made
by `prepare` before anything imports prometheus-client, which reads it at import), and the
maintenance process serves the folder's sum at `http://<worker>:REPLAYFT_WORKER_METRICS_PORT/metrics`
together with what NVML reports of the machine's GPUs. Unset port: no folder, no server, and the
counting calls do nothing.

Series: `replayft_worker_tasks_total` (task, outcome) and `replayft_worker_task_duration_seconds`
(task), `replayft_worker_training_jobs` (jobs training now), `replayft_worker_steps_total` and
`replayft_worker_tokens_total` (trained by this worker's jobs); where NVML sees GPUs,
`replayft_gpu_utilization_ratio`, `replayft_gpu_memory_used_bytes` and
`replayft_gpu_memory_total_bytes` per GPU index.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("replayft.worker.metrics")

FOLDER_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def prepare(port: int | None) -> None:
    """Called by `replayft worker` before the Celery app is imported: a fresh folder for this
    worker's counts, inherited by every process it starts."""
    if port is not None:
        os.environ[FOLDER_ENV] = tempfile.mkdtemp(prefix="replayft-worker-metrics-")


def enabled() -> bool:
    return FOLDER_ENV in os.environ


@functools.cache
def _series() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "tasks": Counter(
            "replayft_worker_tasks", "Tasks this worker finished.", ["task", "outcome"]
        ),
        "duration": Histogram(
            "replayft_worker_task_duration_seconds",
            "How long this worker's tasks ran.",
            ["task"],
            buckets=DURATION_BUCKETS,
        ),
        "training": Gauge(
            "replayft_worker_training_jobs",
            "Jobs this worker is training now.",
            multiprocess_mode="livesum",
        ),
        "steps": Counter("replayft_worker_steps", "Optimizer steps this worker trained."),
        "tokens": Counter("replayft_worker_tokens", "Tokens this worker trained on."),
    }


def task_finished(task: str, outcome: str, seconds: float) -> None:
    if enabled():
        series = _series()
        series["tasks"].labels(task=task, outcome=outcome.lower()).inc()
        series["duration"].labels(task=task).observe(seconds)


def training(delta: int) -> None:
    """A job started (+1) or stopped (-1) training in this process."""
    if enabled():
        _series()["training"].inc(delta)


def trained_step(tokens: int) -> None:
    if enabled():
        _series()["steps"].inc()
        _series()["tokens"].inc(tokens)


def process_exited(pid: int) -> None:
    """A pool child is gone: its live gauges stop counting."""
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


GPU_SERIES = (
    "replayft_gpu_utilization_ratio",
    "replayft_gpu_memory_used_bytes",
    "replayft_gpu_memory_total_bytes",
)


class GpuCollector:
    """The machine's GPUs as NVML sees them (the `nvidia-ml-py` package), read at each scrape;
    nothing where it is not installed or finds no GPU. NVML opens no CUDA context."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # not installed, no driver, no GPU: nothing to report
            return
        try:
            util = GaugeMetricFamily(
                "replayft_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"]
            )
            used = GaugeMetricFamily(
                "replayft_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"]
            )
            total = GaugeMetricFamily(
                "replayft_gpu_memory_total_bytes", "GPU memory (NVML).", labels=["gpu"]
            )
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
                util.add_metric([str(index)], rates.gpu / 100)
                used.add_metric([str(index)], memory.used)
                total.add_metric([str(index)], memory.total)
            yield from (util, used, total)
        finally:
            pynvml.nvmlShutdown()


def serve(port: int) -> None:
    """In the maintenance process: serve the sum of this worker's counts, plus its GPUs."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    _series()  # this process's zeros: every series shows from the start, not at first use
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(GpuCollector())
    start_http_server(port, registry=registry)
    log.info("worker metrics at http://0.0.0.0:%d/metrics", port)
