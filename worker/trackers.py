"""Experiment trackers: a job's `integrations` (W&B, MLflow, TensorBoard), fed by its hooks.

What goes to every tracker is what metrics.jsonl holds: each train and eval record's numbers at
its step (train_loss, train_loss_target / _generic per source, lr, stage, tokens_seen, ...,
val_loss_target / _generic, eval/<name>/accuracy ...), the summary record at the end, and the
job's spec and plan as the run's config. Each goes through the library's own client, imported
only when a job asks for it (each is an optional extra): `wandb.init` / `run.log`,
`mlflow.MlflowClient` (one run per job, found again by its `replayft.job_id` tag when the job
resumes), `torch.utils.tensorboard.SummaryWriter` (in the job's folder; when the job ends the
log directory becomes one of its `result_files`, a tar.gz).

Design:
- **Training never waits for a tracker.** Each tracker runs in a thread of its own fed by a
  queue; the hooks only enqueue. A tracker that fails (library missing, bad URI, no network)
  stops, and its error becomes one `warn` event of the job; the others and the training go on.
  The end of a job waits at most `REPLAYFT_TRACKER_CLOSE_TIMEOUT` for them to send the rest.
- **Credentials are the worker's.** W&B and MLflow read their keys from the worker's
  environment (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, ...); a request names only a project, an
  experiment or one of the tracking URIs the deployment allows. Messages of failed trackers are
  scrubbed of those secrets and of URI user info before they reach an event or the log.
- **One run per job, each step once.** A resumed job (pause, lost worker) continues the same
  W&B run (its id is the job id, `resume="allow"`; steps before the run's own are dropped) and
  MLflow run (a metric's steps up to the last one an earlier attempt logged are skipped);
  TensorBoard purges the steps after the checkpoint it resumes from. The worker calls the hooks
  from its own process in every case: with several training processes the launcher turns rank
  0's bridge files into the same calls.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("replayft.worker.trackers")

# how the job ended, as the trackers record it
TERMINAL_OUTCOMES = ("succeeded", "failed", "cancelled")
SECRET_ENV = (
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "DATABRICKS_TOKEN",
)
QUEUE_LIMIT = 100_000  # records held for a slow tracker before it drops some (with a warning)
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MLFLOW_PARAM_CHARS = 6000  # MLflow's limit of a param value
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_RESULT = "tensorboard.tar.gz"
RESULT_PURPOSE = "fine-tune-results"  # OpenAI's purpose of a job's result files


def redact(text: str) -> str:
    """`text` without the worker's tracker secrets or the user info of any URI in it."""
    for name in SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def numeric_items(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics record, nested ones (the summary's) as `a/b` keys;
    type, step and strings left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if not prefix and key in ("type", "step"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_items(value, f"{name}/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float) and math.isfinite(value):
            out[name] = float(value)
    return out


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `spec.learning_rate` -> "0.0003", lists as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MLFLOW_PARAM_CHARS]
    return out


@dataclass
class RunContext:
    """What every tracker needs to know about the job's run."""

    job_id: str
    name: str  # the run's default display name
    config: dict[str, Any]  # spec and plan, server paths made relative
    artifact_dir: Path
    resume_step: int  # the checkpoint the run resumes from; 0 = a new run
    group: str | None = None  # the sweep the job belongs to
    tags: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- the trackers
class WandbTracker:
    label = "W&B"

    def __init__(self, options: dict[str, Any], context: RunContext, mode: str | None):
        self.options, self.context, self.mode = options, context, mode
        self.run: Any = None
        self.first_step = 0  # a resumed run's steps before it were logged by an earlier attempt

    def start(self) -> None:
        import wandb

        context = self.context
        self.run = wandb.init(
            project=self.options["project"],
            entity=self.options.get("entity"),
            name=self.options.get("name") or context.name,
            tags=self.options.get("tags"),
            group=context.group,
            id=context.job_id,
            resume="allow",
            dir=str(context.artifact_dir),
            config=context.config,
            mode=self.mode,
            reinit="create_new",  # one process may run several jobs' runs in turn
            settings=wandb.Settings(
                console="off", silent=True, x_disable_stats=True, save_code=False
            ),
        )
        self.first_step = self.run.step

    def log(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            values = numeric_items(record)
            if record.get("type") == "summary":
                self.run.summary.update({f"summary/{k}": v for k, v in values.items()})
            elif values and record["step"] >= self.first_step:
                self.run.log(values, step=record["step"])

    def finish(self, outcome: str) -> None:
        self.run.finish(exit_code=0 if outcome in ("succeeded", "paused") else 1)


class MlflowTracker:
    label = "MLflow"
    STATUS = {"succeeded": "FINISHED", "failed": "FAILED"}  # else KILLED (stopped, maybe resumed)

    def __init__(self, options: dict[str, Any], context: RunContext, tracking_uri: str):
        self.options, self.context, self.tracking_uri = options, context, tracking_uri
        self.client: Any = None
        self.run_id = ""
        self.resumed = False
        # a resumed run: each metric's last step an earlier attempt logged (read on first use).
        # A killed attempt logged steps past the checkpoint the job resumes from; training is
        # deterministic, so those steps come again with the same values, and MLflow, which
        # keeps every value it is sent, would hold each twice.
        self.logged_through: dict[str, int] = {}

    def start(self) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = self.client = MlflowClient(tracking_uri=self.tracking_uri)
        name = self.options.get("experiment") or "replayft"
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name)
            except MlflowException:  # another job created it meanwhile
                experiment_id = client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        job_id = self.context.job_id
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`replayft.job_id` = '{job_id}'", max_results=1
        )
        if found:  # the job resumes: same run
            self.run_id, self.resumed = found[0].info.run_id, True
            client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"replayft.job_id": job_id, **self.context.tags}
        if self.context.group:
            tags["replayft.sweep_id"] = self.context.group
        run = client.create_run(
            experiment_id, run_name=self.options.get("run_name") or self.context.name, tags=tags
        )
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flat_params(self.context.config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, records: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = []
        for record in records:
            prefix = "summary/" if record.get("type") == "summary" else ""
            step = int(record.get("step", 0))
            for key, value in numeric_items(record).items():
                if not self._logged_before(prefix + key, step):
                    metrics.append(Metric(prefix + key, value, now_ms, step))
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MLFLOW_BATCH])

    def _logged_before(self, key: str, step: int) -> bool:
        if not self.resumed:
            return False
        if key not in self.logged_through:
            history = self.client.get_metric_history(self.run_id, key)
            self.logged_through[key] = max((m.step for m in history), default=-1)
        return step <= self.logged_through[key]

    def finish(self, outcome: str) -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS.get(outcome, "KILLED"))


class TensorBoardTracker:
    label = "TensorBoard"

    def __init__(self, context: RunContext):
        self.context = context
        self.log_dir = context.artifact_dir / TENSORBOARD_DIR
        self.writer: Any = None

    def start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resume = self.context.resume_step
        # on resume, what a killed attempt wrote after the checkpoint is redone: drop it
        self.writer = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=resume + 1 if resume else None
        )
        if not resume:
            config = json.dumps(self.context.config, indent=2)
            self.writer.add_text("config", f"```json\n{config}\n```", global_step=0)

    def log(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            prefix = "summary/" if record.get("type") == "summary" else ""
            step = int(record.get("step", 0))
            for key, value in numeric_items(record).items():
                self.writer.add_scalar(f"{prefix}{key}", value, global_step=step)
        self.writer.flush()

    def finish(self, outcome: str) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------- one thread each
class TrackerThread(threading.Thread):
    """Runs one tracker's calls in order, off the training thread. The first failure stops it
    and is reported through `warn`; what it had not sent yet is dropped."""

    def __init__(self, tracker: Any, warn: Any):
        super().__init__(name=f"tracker-{tracker.label}", daemon=True)
        self.tracker, self.warn = tracker, warn
        self.inbox: queue.Queue = queue.Queue()
        self.failed = False
        self.finished_ok = False
        self.dropped = 0

    def put(self, record: dict[str, Any]) -> None:
        if self.failed:
            return
        if self.inbox.qsize() >= QUEUE_LIMIT:
            if not self.dropped:
                self.warn(f"{self.tracker.label} is falling behind; some metrics were not sent.")
            self.dropped += 1
            return
        self.inbox.put(("log", record))

    def run(self) -> None:
        try:
            self.tracker.start()
        except BaseException as exc:  # noqa: BLE001 - a tracker never stops the job
            self._fail("could not start", exc)
            return
        while True:
            kind, item = self.inbox.get()
            batch = []
            while kind == "log":
                batch.append(item)
                try:
                    kind, item = self.inbox.get_nowait()
                except queue.Empty:
                    kind = None
            try:
                if batch:
                    self.tracker.log(batch)
                if kind == "finish":
                    self.tracker.finish(item)
                    self.finished_ok = True
                    return
            except BaseException as exc:  # noqa: BLE001
                self._fail("stopped logging", exc)
                return

    def _fail(self, what: str, exc: BaseException) -> None:
        self.failed = True
        message = redact(f"{self.tracker.label} {what}: {type(exc).__name__}: {exc}")[:1000]
        log.warning("%s", message)
        self.warn(message + " The training goes on without it.")


class Trackers:
    """The job's trackers as the hooks see them: `on_metrics`, `take_warnings`, `close`."""

    def __init__(self, trackers: list[Any]):
        self._warnings: list[str] = []
        self._lock = threading.Lock()
        self.closed = False
        self.threads = [TrackerThread(t, self._warn) for t in trackers]
        for thread in self.threads:
            thread.start()

    def _warn(self, message: str) -> None:
        with self._lock:
            self._warnings.append(message)

    def take_warnings(self) -> list[str]:
        with self._lock:
            taken, self._warnings = self._warnings, []
        return taken

    def on_metrics(self, record: dict[str, Any]) -> None:
        for thread in self.threads:
            thread.put(record)

    def close(self, outcome: str, timeout: float) -> list[Any]:
        """Finish every tracker's run with the job's outcome, waiting at most `timeout` seconds
        in all; -> the trackers that finished (nothing on a second call)."""
        if self.closed:
            return []
        self.closed = True
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            if not thread.failed:
                thread.inbox.put(("finish", outcome))
        finished = []
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                thread.failed = True
                self._warn(
                    f"{thread.tracker.label} did not finish sending within {timeout:g}s; "
                    "what it still held is lost."
                )
            elif thread.finished_ok:
                finished.append(thread.tracker)
        return finished


# ---------------------------------------------------------------------------- from a job
def public_config(spec: dict[str, Any], plan: dict[str, Any] | None, data_dir: Path, **extra):
    """The run's config: spec and plan, with paths inside the data folder made relative to it
    (`files/file-….jsonl`) and the worker's cache folder left out."""
    root = str(data_dir).rstrip("/") + "/"

    def relative(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(root):
            return value[len(root) :]
        if isinstance(value, list):
            return [relative(v) for v in value]
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        return value

    spec = {k: v for k, v in spec.items() if k != "cache_dir"}
    return {**extra, "spec": relative(spec), "plan": plan}


def build_trackers(integrations: list[dict[str, Any]], context: RunContext, settings) -> Trackers:
    """A `Trackers` running one tracker per integration (none: does nothing)."""
    trackers: list[Any] = []
    for item in integrations:
        kind = item.get("type")
        options = item.get(kind) or {}
        if kind == "wandb":
            trackers.append(WandbTracker(options, context, settings.wandb_mode))
        elif kind == "mlflow":
            uri = options.get("tracking_uri") or settings.mlflow_tracking_uri
            trackers.append(MlflowTracker(options, context, uri))
        elif kind == "tensorboard":
            trackers.append(TensorBoardTracker(context))
    return Trackers(trackers)


def pack_tensorboard(log_dir: Path, target: Path) -> Path:
    """The log directory as `target` (tar.gz, written beside it and renamed into place)."""
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(log_dir, arcname=TENSORBOARD_DIR)
    os.replace(tmp, target)
    return target


def close_for_job(trackers: Trackers, *, job_id: str, outcome: str, timeout: float) -> None:
    """End the job's trackers with its outcome; once the job has ended (not paused or
    requeued), publish its TensorBoard log directory as a result file; then record every
    tracker warning as a `warn` event. Never raises: the job's outcome does not depend on it."""
    from sqlalchemy import select

    from control.db.models import File, Job
    from control.db.session import session_scope
    from control.lifecycle import add_event

    try:
        finished = trackers.close(outcome, timeout)
        boards = [t for t in finished if isinstance(t, TensorBoardTracker)]
        with session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            if boards and outcome in TERMINAL_OUTCOMES and job is not None:
                packed = pack_tensorboard(
                    boards[0].log_dir, Path(job.artifact_dir) / TENSORBOARD_RESULT
                )
                result = File(
                    team_id=job.team_id,
                    filename=f"{job_id}-{TENSORBOARD_RESULT}",
                    purpose=RESULT_PURPOSE,
                    bytes=packed.stat().st_size,
                    path=str(packed),
                    status="processed",
                    stats={"format": "tar.gz", "contents": "tensorboard event files"},
                )
                session.add(result)
                session.flush()
                job.result_files = [*(job.result_files or []), result.id]
                add_event(
                    session,
                    job_id,
                    f"TensorBoard logs saved as result file {result.id}.",
                    file_id=result.id,
                )
            for message in trackers.take_warnings():
                add_event(session, job_id, message, level="warn")
            session.commit()
    except Exception:
        log.exception("closing the trackers of job %s", job_id)
