"""The serving process's loaded models: loaded on first use, kept while they fit the memory
budget (least recently used unloaded first), each with one thread that runs its batches.

Batching: a model's thread takes the first waiting request, then waits up to the batch window
for more requests to the same model (at most `max_batch` sequences, counting each request's n),
and runs them as one padded batch (replay_engine.generation.generate_batch). Requests that
arrive while a batch runs form the next one. Different models run in their own threads, side by
side.

Regrouping: a batch runs to its end, so clients that send their next request as soon as their
answer ends (a chat UI, an eval loop, a benchmark at concurrency 8) would otherwise stay split
into the groups that first happened to arrive apart: one latecomer runs alone while the seven
others wait, then the seven run while it waits, and a batch never holds more than half of them.
So after a batch of k requests the next one waits up to `regroup_s` (longer than the window: a
client's round trip) for as many as k, and starts as soon as it has them; a lone client pays it
once, after which its batches are of one and wait only the window. It also waits (up to
`regroup_s`) while requests the server has received for this model are still being prepared
(`arriving`): their prompts are tokenized one after another, so eight requests sent at once can
take longer than the window to reach the queue.
"""

from __future__ import annotations

import collections
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from replay_engine.generation import LoadedModel, Request, generate_batch, load_for_generation

log = logging.getLogger("replayft.inference")


@dataclass
class Stats:
    """Counters for /stats (and the tests): what the pool did since it started."""

    loads: int = 0
    evictions: int = 0
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0  # most requests in one batch
    cancelled: int = 0  # requests whose client went away before the end
    generated_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in vars(self).items() if k != "lock"}


@dataclass
class Job:
    """One request waiting for its batch; `done(error)` is called once it has run (or failed)."""

    request: Request
    done: Callable[[BaseException | None], None]


class ServedModel:
    """A loaded model and the thread that runs its batches until `close`."""

    def __init__(
        self,
        loaded: LoadedModel,
        window_s: float,
        max_batch: int,
        stats: Stats,
        regroup_s: float = 0.0,
    ):
        self.loaded, self.window_s, self.max_batch, self.stats = loaded, window_s, max_batch, stats
        self.regroup_s = max(regroup_s, window_s)
        self._last_batch = 0  # requests in the batch that ran last
        self._arriving = 0  # requests received for this model, not queued yet
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._held: Job | None = None  # taken from the queue, too big for the batch it came in
        self._lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"batches:{loaded.name}", daemon=True
        )
        self._thread.start()

    def arriving(self) -> None:
        """A request for this model is on its way (`submit` or `not_arriving` follows): the
        batch being formed waits for it."""
        with self._lock:
            self._arriving += 1

    def not_arriving(self) -> None:
        """The request announced by `arriving` was refused before `submit`."""
        with self._lock:
            self._arriving = max(0, self._arriving - 1)

    def submit(self, job: Job, announced: bool = False) -> bool:
        """Queue `job` (`announced`: after `arriving`); False if the model was unloaded
        meanwhile (get it from the pool again)."""
        with self._lock:
            if announced:
                self._arriving = max(0, self._arriving - 1)
            if self.closed:
                return False
            self._queue.put(job)
            return True

    def close(self) -> None:
        """Unload once the jobs already queued have run."""
        with self._lock:
            self.closed = True
            self._queue.put(None)

    def _next_batch(self) -> list[Job] | None:
        first = self._held or self._queue.get()
        self._held = None
        if first is None:
            return None
        batch, rows = [first], first.request.n
        start = time.monotonic()
        while rows < self.max_batch:
            # the window; longer while the last batch's clients may still be on their way back
            regroup = len(batch) < self._last_batch or self._arriving > 0
            wait = self.regroup_s if regroup else self.window_s
            try:
                job = self._queue.get(timeout=max(0.0, start + wait - time.monotonic()))
            except queue.Empty:
                break
            if job is None:  # closing: run what we have, then stop
                self._queue.put(None)
                break
            if rows + job.request.n > self.max_batch:
                self._held = job
                break
            batch.append(job)
            rows += job.request.n
        self._last_batch = len(batch)
        return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if not job.request.cancelled()]
            self.stats.add(batches=1)
            with self.stats.lock:
                self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            error: BaseException | None = None
            try:
                tokens = generate_batch(self.loaded, [job.request for job in live])
                self.stats.add(generated_tokens=tokens)
            except Exception as exc:  # noqa: BLE001 - reported to every request of the batch
                log.exception("generation failed on %s", self.loaded.name)
                error = exc
            for job in batch:
                job.done(error)
        self.loaded = None  # type: ignore[assignment]  # let the weights go


class ModelPool:
    """Served models by (model, gguf_file), within `budget_bytes` of weights."""

    def __init__(
        self,
        budget_bytes: int,
        *,
        device: str = "auto",
        window_s: float = 0.01,
        max_batch: int = 16,
        regroup_s: float = 0.1,
        load: Callable[..., LoadedModel] = load_for_generation,
    ):
        self.budget_bytes, self.device = budget_bytes, device
        self.window_s, self.max_batch, self.regroup_s = window_s, max_batch, regroup_s
        self.stats = Stats()
        self._load = load
        self._models: collections.OrderedDict[tuple[str, str | None], ServedModel] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}

    def get(self, model: str, gguf_file: str | None = None) -> ServedModel:
        """The served model, loading it (once, however many requests ask at the same time) if it
        is not loaded. Blocking: call it from a thread. ValueError if it cannot be loaded."""
        key = (model, gguf_file)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            log.info("loading %s", model)
            loaded = self._load(model, gguf_file=gguf_file, device=self.device)
            served = ServedModel(
                loaded, self.window_s, self.max_batch, self.stats, regroup_s=self.regroup_s
            )
            with self._lock:
                self._models[key] = served
                self._loading.pop(key, None)
                evicted = self._evict(keep=key)
            self.stats.add(loads=1, evictions=len(evicted))
        if evicted:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return served

    def _evict(self, keep: tuple[str, str | None]) -> list[ServedModel]:
        """Unload least recently used models until the rest fit the budget (a model bigger than
        the budget on its own stays loaded, alone)."""
        evicted = []
        while self.memory_bytes() > self.budget_bytes and len(self._models) > 1:
            oldest = next(k for k in self._models if k != keep)
            served = self._models.pop(oldest)
            log.info("unloading %s (memory budget %d bytes)", oldest[0], self.budget_bytes)
            served.close()
            evicted.append(served)
        return evicted

    def memory_bytes(self) -> int:
        return sum(s.loaded.memory_bytes for s in self._models.values())

    def loaded(self) -> list[dict[str, object]]:
        """Loaded models, least recently used first."""
        with self._lock:
            return [
                {
                    "model": model,
                    "gguf_file": gguf,
                    "memory_bytes": served.loaded.memory_bytes,
                    "device": str(served.loaded.device),
                }
                for (model, gguf), served in self._models.items()
            ]

    def close(self) -> None:
        with self._lock:
            for served in self._models.values():
                served.close()
            self._models.clear()
