"""What the workers do, as plain functions (Celery tasks in worker.tasks only call these).

Every change of a job's status goes through `control.lifecycle` (the job state machine); this
module decides when, and does the work in between.

`run_job(job_id)` is the heart:
  1. claim the job (`lifecycle.claim`: one conditional UPDATE, only if no live worker holds its
     lease); a duplicate delivery of the same message finds the lease taken and returns.
  2. a heartbeat thread refreshes `heartbeat_at` while the job runs, and notices a lost lease.
  3. `replay_engine.trainer.train(spec, job_dir, hooks)`: the engine resumes by itself from the
     newest checkpoint in the job's folder, so a requeued or resumed job continues, not restarts.
     `DBHooks` batches metric rows, writes events and checkpoint rows, keeps `progress` current,
     and turns the API's cancel/pause requests (`jobs.control`) into `should_stop`.
  4. the outcome: succeeded (fine_tuned_model, trained_tokens, finished_at), paused, cancelled,
     or failed with a readable `error.message`; the traceback goes to the log and to an error
     event of the job (visible to its own team only).

Jobs whose worker died are requeued by `lifecycle.requeue_lost_jobs`, which each worker's
maintenance process runs (worker.maintenance).

`validate_file` and `prepare_job` are the `files` queue's work: format checks with line numbers
plus token counts, and tokenizing a new job's data to resolve its schedule before it is queued.
A job may name files that are still being validated (a client uploads and creates the job at
once): `prepare_job` then leaves it in `validating_files` and returns, and `validate_file`, once
its result is committed, records a PREPARE_JOB for every job waiting on that file. Should the
worker die between the two, the job's own PREPARE_JOB outbox row is still due (it takes effect
only when the job leaves `validating_files`), so the relay sends it again. A file that failed
validation (or was deleted) fails the job with the file's error, naming the request field.
"""

from __future__ import annotations

import _thread
import logging
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from control import lifecycle, scheduling, webhooks
from control.db.models import Checkpoint, File, Job, JobMetric, JobNode, Team, now
from control.db.session import session_scope
from control.fields import file_field, job_files
from control.lifecycle import add_event
from control.queue import PREPARE_JOB, RUN_NODE, enqueue
from control.settings import get_settings
from worker import metrics as worker_metrics

if TYPE_CHECKING:  # the engine is imported inside the functions that use it, as elsewhere here
    from replay_engine.data import Problems
    from worker.trackers import Trackers

log = logging.getLogger("replayft.worker")

RETRY_LATER = "retry-later"


# ---------------------------------------------------------------------------- helpers
class JobFileError(Exception):
    """A file the job names failed validation or is gone: the job fails with its error."""

    def __init__(self, code: str, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.code, self.param = code, param


def readable_error(exc: BaseException, job: Job | None = None) -> tuple[str, str, str | None]:
    """-> (code, message, param) for a client: no traceback and no server paths. With the
    `job`, a data error names the request field of the file it is in."""
    from control.fields import api_param
    from replay_engine.data import DataFormatError
    from replay_engine.launcher import NodesMissing
    from replay_engine.spec import SpecError
    from replay_engine.trainer import TrainingDiverged

    if isinstance(exc, JobFileError):
        return exc.code, str(exc), exc.param
    if isinstance(exc, SpecError):
        path, message = exc.errors[0]
        return "invalid_spec", f"{api_param(path)}: {message}", api_param(path)
    if isinstance(exc, DataFormatError):
        where = Path(exc.path).stem
        where += f", line {exc.line}" if exc.line else ""
        return "invalid_file", f"{where}: {exc.reason}", file_field(job, exc.path) if job else None
    if isinstance(exc, NodesMissing):
        param = "hyperparameters.distributed.nodes"
        return "nodes_unavailable", f"{param}: {exc}", param
    if isinstance(exc, TrainingDiverged):
        return "training_diverged", str(exc), None
    if "out of memory" in str(exc).lower():
        return "out_of_memory", f"The accelerator ran out of memory: {exc}", None
    return "internal_error", f"Training failed: {type(exc).__name__}: {exc}", None


def transient_db_error(exc: BaseException) -> bool:
    """A database error worth retrying: SQLite busy or locked, a lost or refused connection."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    if "database is locked" in text or "database is busy" in text:
        return True
    return "connection" in text and any(w in text for w in ("closed", "lost", "refused", "reset"))


def fail_job(job_id: str, exc: BaseException, *, owner: str | None = None) -> None:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        session.expunge_all()
    code, message, param = readable_error(exc, job)
    tb = "".join(traceback.format_exception(exc))
    log.error("job %s failed: %s\n%s", job_id, message, tb)
    lifecycle.fail(job_id, {"code": code, "message": message, "param": param}, tb, owner=owner)


# ---------------------------------------------------------------------------- files queue
def file_stats(path: str, problems: Problems | None = None) -> dict[str, Any]:
    """Format, number of examples and tokens (with one EOS per document, as packed) of the
    good records; bad ones go to `problems` when given, else the first one raises.

    Streams: documents are read one at a time and tokenized in batches of bounded size, so
    memory stays flat however large the upload (replay corpora can be many GB).

    Bounded in time too, so that one team's big upload does not hold the files queue for long:
    every record is read and checked (about 50 MB/s), but only the first `token_count_chars`
    characters of text are tokenized (the slow part, about 1 MB/s); beyond them the count is
    extrapolated from those (`tokens_estimated: true`). The count is for display only."""
    from replay_engine.data import iter_documents, text_batches
    from replay_engine.models import load_tokenizer

    settings = get_settings()
    name = settings.default_tokenizer_model
    tokenizer = load_tokenizer(name)
    # the line bound keeps one huge line from taking minutes and gigabytes of this worker
    fmt, docs = iter_documents(path, tokenizer, problems, max_line_bytes=settings.max_line_bytes)
    examples = tokens = counted_chars = all_chars = 0

    def segment_texts():
        nonlocal examples
        for doc in docs:
            examples += 1
            yield from (segment.text for segment in doc)

    for batch in text_batches(segment_texts()):
        chars = sum(map(len, batch))
        all_chars += chars
        if counted_chars < settings.token_count_chars:
            ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)
            tokens += sum(map(len, ids["input_ids"]))
            counted_chars += chars
    stats = {"format": fmt, "examples": examples, "tokens": tokens + examples, "tokenizer": name}
    if counted_chars < all_chars:
        stats["tokens"] = round(tokens * all_chars / counted_chars) + examples
        stats["tokens_estimated"] = True
    return stats


def validate_file(file_id: str) -> None:
    from replay_engine.data import DataFormatError, Problems
    from replay_engine.evals import eval_file_stats

    with session_scope() as session:
        file = session.scalar(select(File).where(File.id == file_id))
        if file is None or file.status != "uploaded":
            return  # deleted meanwhile, or a duplicate delivery
        path, team_id, purpose = file.path, file.team_id, file.purpose
    stats, details = None, None
    problems = Problems()  # every bad line is counted, the first ten are named
    try:
        if purpose == "evals":
            stats = eval_file_stats(path, problems, max_line_bytes=get_settings().max_line_bytes)
        else:
            stats = file_stats(path, problems)
        if problems.count:
            stats, details = None, problems.summary()
    except DataFormatError as exc:
        details = f"line {exc.line}: {exc.reason}" if exc.line else exc.reason
    except Exception as exc:
        log.exception("validating %s failed", file_id)
        details = f"could not read the file: {type(exc).__name__}: {exc}"
    with session_scope() as session:
        session.execute(
            update(File)
            .where(File.id == file_id)
            .values(status="error" if details else "processed", status_details=details, stats=stats)
        )
        session.commit()
    # after that commit, in a transaction of its own: a job created while the file was being
    # validated either is visible here, or its own PREPARE_JOB reads the file's new status
    with session_scope() as session:
        waiting = session.scalars(
            select(Job).where(Job.team_id == team_id, Job.status == "validating_files")
        )
        for job in waiting:
            if any(named == file_id for _, named in job_files(job)):
                enqueue(session, PREPARE_JOB, job.id)
        session.commit()


def unvalidated_files(session: Session, job: Job) -> list[str]:
    """The job's files still being validated; raises JobFileError for one that failed or is
    gone."""
    pending = []
    for param, file_id in job_files(job):
        file = session.scalar(select(File).where(File.id == file_id))
        if file is None:
            message = f"File {file_id} was deleted before the job started."
            raise JobFileError("file_not_found", param, message)
        if file.status == "error":
            message = f"File {file_id} ({file.filename}) failed validation: {file.status_details}"
            raise JobFileError("invalid_file", param, message)
        if file.status != "processed":
            pending.append(file_id)
    return pending


def prepare_job(job_id: str) -> None:
    """Tokenize a new job's data (warming the cache for the trainer) and resolve its plan."""
    from control.limits import plan_problem
    from replay_engine.spec import JobSpec, SpecError, upgrade_spec_data
    from replay_engine.trainer import DataProgress, prepare

    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None or job.status != "validating_files":
            return
        pending, failed = [], None
        try:
            pending = unvalidated_files(session, job)
        except JobFileError as exc:
            failed = exc
        if pending:  # validate_file sends this task again once they are done
            add_event(session, job_id, f"Waiting for {', '.join(pending)} to finish validation.")
            session.commit()
            return
        spec = JobSpec.model_validate(upgrade_spec_data(job.spec))
    if failed is not None:
        fail_job(job_id, failed)
        return

    def emit(message: str) -> None:
        with session_scope() as session:
            if session.scalar(select(Job.status).where(Job.id == job_id)) != "validating_files":
                raise JobInterrupted()  # cancelled while its data is being prepared
            add_event(session, job_id, message)
            session.commit()

    try:
        plan = prepare(spec, DataProgress(emit)).plan.summary()
        over = plan_problem(spec, plan["total_steps"], get_settings())
        if over is not None:  # submission only estimated the steps; this is the exact count
            raise SpecError([over])
    except JobInterrupted:
        return
    except Exception as exc:
        if transient_db_error(exc):
            raise  # the task retries; the job stays validating_files
        fail_job(job_id, exc)
        return
    lifecycle.prepared(job_id, plan)  # False: cancelled while its files were being prepared


# ---------------------------------------------------------------------------- training
class DBHooks:
    """Engine hooks writing to the database; see the module docstring."""

    FLUSH_EVERY = 50  # metric rows
    FLUSH_SECONDS = 2.0
    CONTROL_POLL_SECONDS = 0.5

    def __init__(
        self,
        *,
        job: Job,
        owner: str,
        model_name: str,
        batch_size: int,
        seq_len: int,
        trackers: Trackers | None = None,
    ):
        from worker.trackers import Trackers

        self.job_id = job.id
        self.team_id = job.team_id
        self.trackers = trackers or Trackers([])  # the job's integrations: W&B, MLflow, ...
        self.owner = owner
        self.ckpt_prefix = f"{model_name}:ckpt-step-"
        self.tokens_per_step = batch_size * seq_len
        self.total_steps = (job.plan or {}).get("total_steps")
        self.buffer: list[dict[str, Any]] = []
        self.pending_events: list[tuple[str, str, dict]] = []
        self.progress: dict[str, Any] = dict(job.progress or {})
        self.stage: int | None = self.progress.get("stage")  # set when resuming
        self.last_train: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self.last_task_eval: dict[str, Any] = {}
        self.step_times: list[float] = []
        self.last_flush = time.monotonic()
        self.last_poll = 0.0
        self.stop_reason: str | None = None  # "cancel" | "pause" | "lost"

    # -- engine callbacks
    def on_metrics(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        self.trackers.on_metrics(record)  # only queued: trackers send from threads of their own
        self.buffer.append(record)
        if kind == "train":
            worker_metrics.trained_step(self.tokens_per_step)
            self.last_train = record
            self.step_times = (self.step_times + [record["step_time"]])[-20:]
            if record["stage"] != self.stage:
                if self.stage is not None or record["step"] > 1:
                    self.pending_events.append(
                        ("info", f"Stage {record['stage']} started at step {record['step']}.", {})
                    )
                self.stage = record["stage"]
            self._update_progress(record)
        elif kind == "eval":
            losses = {k: v for k, v in record.items() if k.startswith("val_loss") and v is not None}
            if losses or not any(k.startswith("eval/") for k in record):
                self.last_eval = record
                text = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                self.pending_events.append(
                    ("info", f"Eval at step {record['step']}: {text}", losses)
                )
            self._task_eval_events(record)
        due = time.monotonic() - self.last_flush > self.FLUSH_SECONDS
        if kind != "train" or due or len(self.buffer) >= self.FLUSH_EVERY:
            self.flush()

    def _task_eval_events(self, record: dict[str, Any]) -> None:
        """One line per task eval of the record: `Eval gsm8k at step 0: accuracy 0.1200 (6/50)`."""
        scores = {k: v for k, v in record.items() if k.startswith("eval/")}
        if not scores:
            return
        step = record["step"]
        self.last_task_eval = {"step": step, **scores}
        names = dict.fromkeys(k.split("/")[1] for k in scores)  # in the record's order
        for name in names:
            mine = {k: v for k, v in scores.items() if k.split("/")[1] == name}
            text = f"accuracy {mine.get(f'eval/{name}/accuracy', 0):.4f}"
            norm = mine.get(f"eval/{name}/accuracy_norm")
            if norm is not None:
                text += f", accuracy_norm {norm:.4f}"
            correct, total = mine.get(f"eval/{name}/correct"), mine.get(f"eval/{name}/total")
            text += f" ({correct}/{total})"
            self.pending_events.append(("info", f"Eval {name} at step {step}: {text}", mine))

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.flush()
        metrics = {
            "step": step,
            "train_loss": self.last_train.get("train_loss"),
            "valid_loss": self.last_eval.get("val_loss_target")
            if self.last_eval.get("step") == step
            else None,
            "train_loss_target": self.last_train.get("train_loss_target"),
            "train_loss_generic": self.last_train.get("train_loss_generic"),
            "val_loss_target": self.last_eval.get("val_loss_target"),
            "val_loss_generic": self.last_eval.get("val_loss_generic"),
        }
        if self.last_task_eval.get("step") == step:  # the task evals score every checkpoint
            metrics.update({k: v for k, v in self.last_task_eval.items() if k != "step"})
        with session_scope() as session:
            ckpt = session.scalar(
                select(Checkpoint).where(
                    Checkpoint.job_id == self.job_id, Checkpoint.step_number == step
                )
            )
            if ckpt is None:
                ckpt = Checkpoint(job_id=self.job_id, step_number=step)
                session.add(ckpt)
            ckpt.path = str(path)
            ckpt.fine_tuned_model_checkpoint = f"{self.ckpt_prefix}{step}"
            ckpt.metrics = metrics
            ckpt.created_at = now()
            # the engine prunes old step folders; drop the rows that point at nothing now
            for old in session.scalars(
                select(Checkpoint).where(
                    Checkpoint.job_id == self.job_id, Checkpoint.step_number != step
                )
            ):
                if not Path(old.path).is_dir():
                    session.delete(old)
            add_event(session, self.job_id, f"Checkpoint saved at step {step}.", step=step)
            webhooks.checkpoint_created(session, self.team_id, ckpt)
            session.commit()

    def should_stop(self, step: int) -> bool:
        if time.monotonic() - self.last_poll >= self.CONTROL_POLL_SECONDS:
            self.last_poll = time.monotonic()
            self.poll_control()
        if self.stop_reason:
            self.flush()
        return self.stop_reason is not None

    # -- database
    def poll_control(self) -> None:
        with session_scope() as session:
            row = session.execute(
                select(Job.status, Job.control, Job.lease_owner).where(Job.id == self.job_id)
            ).first()
        if row is None or row.lease_owner != self.owner:
            self.stop_reason = "lost"
        elif row.status == "cancelled" or row.control == "cancel":
            self.stop_reason = "cancel"
        elif row.control == "pause":
            self.stop_reason = "pause"

    def _update_progress(self, record: dict[str, Any]) -> None:
        step = record["step"]
        eta = None
        if self.total_steps and self.step_times:
            eta = (self.total_steps - step) * sum(self.step_times) / len(self.step_times)
        self.progress = {
            "step": step,
            "total_steps": self.total_steps,
            "stage": record["stage"],
            "tokens_seen": record["tokens_seen"],
            "eta_seconds": eta,
        }

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        self.pending_events += [("warn", m, {}) for m in self.trackers.take_warnings()]
        if not self.buffer and not self.pending_events:
            return
        eta = self.progress.get("eta_seconds")
        with session_scope() as session:
            session.add_all(
                JobMetric(
                    job_id=self.job_id,
                    step=int(record.get("step", 0)),
                    type=str(record.get("type")),
                    record=record,
                )
                for record in self.buffer
            )
            for level, message, data in self.pending_events:
                add_event(session, self.job_id, message, level=level, **data)
            session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_owner == self.owner)
                .values(
                    progress=self.progress,
                    heartbeat_at=time.time(),
                    estimated_finish=int(time.time() + eta) if eta is not None else None,
                )
            )
            session.commit()
        self.buffer, self.pending_events = [], []


class JobInterrupted(BaseException):
    """Raised in the thread running the engine when a cancel was not acted on at a step boundary
    within `Heartbeat.CANCEL_GRACE_SECONDS` (a long step, eval, checkpoint or data preparation).
    A BaseException, so no `except Exception` in the engine swallows it."""


class Heartbeat(threading.Thread):
    """Refreshes the lease while the engine runs (including long tokenization or checkpoint
    writes, when no hook is called), flags a lease taken over by someone else, and watches for a
    cancel: the engine asks `should_stop` only between steps, so if a cancel has not stopped it
    CANCEL_GRACE_SECONDS after this thread saw it, `interrupt` is called (run_job raises
    JobInterrupted in the engine's thread)."""

    CANCEL_GRACE_SECONDS = 1.0

    def __init__(
        self, job_id: str, owner: str, hooks: DBHooks, interrupt: Callable[[], None] | None = None
    ):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id, self.owner, self.hooks, self.interrupt = job_id, owner, hooks, interrupt
        self.interval = max(0.5, min(10.0, get_settings().heartbeat_timeout / 4))
        self.stopped = threading.Event()
        self.cancel_seen: float | None = None

    def run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self.stopped.wait(min(1.0, self.interval)):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    self.beat()
                if self.interrupt is not None:
                    self.watch_cancel()
            except Exception:  # a missed beat is not fatal; the next one may get through
                log.exception("heartbeat for %s failed", self.job_id)

    def beat(self) -> None:
        with session_scope() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_owner == self.owner)
                .values(heartbeat_at=time.time())
            )
            session.commit()
        if not result.rowcount:
            self.hooks.stop_reason = "lost"

    def watch_cancel(self) -> None:
        if self.cancel_seen is None:
            with session_scope() as session:
                row = session.execute(
                    select(Job.status, Job.control).where(Job.id == self.job_id)
                ).first()
            if row is not None and (row.status == "cancelled" or row.control == "cancel"):
                self.cancel_seen = time.monotonic()
        elif time.monotonic() - self.cancel_seen >= self.CANCEL_GRACE_SECONDS:
            log.warning("job %s: cancel not reached at a step boundary; interrupting", self.job_id)
            interrupt, self.interrupt = self.interrupt, None
            interrupt()


def interrupter() -> tuple[Callable[[], None] | None, Callable[[], None]]:
    """-> (interrupt, disarm): `interrupt()` from another thread raises JobInterrupted in this
    one at its next Python instruction, until `disarm()`. (None, ...) off the main thread, where
    Python runs no signal handlers (a threads pool)."""
    if threading.current_thread() is not threading.main_thread():
        return None, lambda: None
    armed = threading.Event()
    armed.set()

    def _raise(_signum, _frame) -> None:
        if armed.is_set():
            raise JobInterrupted()

    # SIGUSR2 is simulated in-process (never sent); Celery and billiard leave it unused
    signal.signal(signal.SIGUSR2, _raise)
    return (lambda: _thread.interrupt_main(signal.SIGUSR2)), armed.clear


def stop_interrupted(job_id: str, owner: str, hooks: DBHooks) -> None:
    """Release a job whose engine was interrupted by a cancel (it is `cancelled` already)."""
    try:
        hooks.flush()
    except Exception:
        log.exception("flushing metrics of interrupted job %s", job_id)
    step = hooks.progress.get("step", 0)
    lifecycle.release(job_id, owner, f"Training interrupted by the cancel, after step {step}.")


def run_job(offered_id: str) -> str | None:
    """Claim and run (or resume) the queued job that fair share picks (control.scheduling; the
    offered job, whose message this is, or another); RETRY_LATER when nothing could start and
    the offered job waits for a lease its previous worker still holds."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    job_id = scheduling.claim_next(owner)
    if job_id is None:
        with session_scope() as session:
            offered = session.execute(
                select(Job.status, Job.lease_owner).where(Job.id == offered_id)
            ).first()
            if scheduling.note_quota_wait(session, offered_id):  # shown on the job, once
                session.commit()
        # queued but leased: its previous worker is still stopping (pause then quick resume)
        leased = offered is not None and offered.status == "queued" and offered.lease_owner
        return RETRY_LATER if leased else None
    log.info("job %s: claimed by %s (offered %s)", job_id, owner, offered_id)
    worker_metrics.training(+1)
    try:
        train_claimed(job_id, owner)
    finally:
        worker_metrics.training(-1)
        try:  # a running slot of the team is free again
            with session_scope() as session:
                team_id = session.scalar(select(Job.team_id).where(Job.id == job_id))
                scheduling.wake_team(session, team_id)
                session.commit()
        except Exception:  # the relay sends the team's queued jobs again later anyway
            log.exception("job %s: waking the team's queued jobs", job_id)
    return None


def train_claimed(job_id: str, owner: str) -> None:
    """Train a job this worker has claimed as `owner`, to its end, a stop, or a failure."""
    from replay_engine import checkpoint as ckpt
    from replay_engine.launcher import NodesMissing, RankFailed, launch
    from replay_engine.spec import JobSpec, upgrade_spec_data
    from replay_engine.trainer import train

    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        team = session.scalar(select(Team).where(Team.id == job.team_id))
        name = lifecycle.fine_tuned_name(
            base=job.model, team=team, suffix=job.suffix, job_id=job.id
        )
        if job.started_at is None:
            job.started_at = now()
        resume = ckpt.latest_checkpoint(job.artifact_dir)
        start_step = int(ckpt.read_meta(resume)["step"]) if resume else 0
        # The engine redoes every step after its checkpoint (and cuts metrics.jsonl back the
        # same way), so rows a killed attempt wrote after that point would be duplicated.
        stale = JobMetric.job_id == job_id
        session.execute(
            delete(JobMetric).where(stale, JobMetric.step > start_step)
            if resume
            else delete(JobMetric).where(stale)
        )
        add_event(
            session,
            job_id,
            f"Resuming from the checkpoint at step {start_step}."
            if resume
            else "Fine-tuning job started.",
            attempt=job.attempts,
        )
        session.commit()
        spec = JobSpec.model_validate(upgrade_spec_data(job.spec))
        artifact_dir = job.artifact_dir
        try:
            trackers = job_trackers(job, start_step)
        except Exception:  # never a reason not to train: the job runs without them
            log.exception("job %s: its trackers could not be set up", job_id)
            trackers = None

    hooks = DBHooks(
        job=job,
        owner=owner,
        model_name=name,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        trackers=trackers,
    )

    def end_trackers(outcome: str) -> None:
        from worker.trackers import close_for_job

        if trackers is None:
            return
        timeout = get_settings().tracker_close_timeout
        close_for_job(trackers, job_id=job_id, outcome=outcome, timeout=timeout)

    interrupt, disarm = interrupter()
    heartbeat = Heartbeat(job_id, owner, hooks, interrupt)
    heartbeat.start()
    try:
        if spec.distributed.nodes > 1:
            rendezvous = lead_machines(job_id, owner, spec)
            try:
                result = launch(spec, artifact_dir, hooks, rendezvous=rendezvous)
            except NodesMissing as exc:
                finish_node(job_id, owner, 0, status="failed")
                raise nodes_missing(job_id, owner, spec, rendezvous) from exc
            except Exception:
                finish_node(job_id, owner, 0, status="failed")
                raise
            finish_node(job_id, owner, 0, status="finished")
        elif spec.distributed.world_size > 1:
            # torchrun child processes; rank 0's bridge files drive the same hooks
            world, strategy = spec.distributed.world_size, spec.distributed.strategy
            with session_scope() as session:
                add_event(session, job_id, f"Training on {world} processes ({strategy}).")
                session.commit()
            result = launch(spec, artifact_dir, hooks)
        else:
            result = train(spec, artifact_dir, hooks)
        disarm()
        hooks.flush()
        # the trackers end first (the heartbeat still beating), so a job that has succeeded
        # already lists its result files
        stopped = {"cancel": "cancelled", "pause": "paused"}.get(hooks.stop_reason or "", "lost")
        end_trackers(stopped if result.stopped else "succeeded")
    except JobInterrupted:
        disarm()
        stop_interrupted(job_id, owner, hooks)
        end_trackers("cancelled")
        return None
    except Exception as exc:
        disarm()
        try:
            hooks.flush()
        except Exception:
            log.exception("flushing metrics of failed job %s", job_id)
        lost_machine = spec.distributed.nodes > 1 and type(exc) is RankFailed
        requeue = lost_machine or transient_db_error(exc)
        if requeue and requeue_after_failure(job_id, owner, exc):
            end_trackers("requeued")
        else:
            end_trackers("failed")  # first, so the job's result files are there when it fails
            fail_job(job_id, exc, owner=owner)
        return None
    finally:
        heartbeat.stopped.set()

    if not result.stopped:
        trained_tokens = result.total_steps * spec.batch_size * spec.seq_len
        outcome = dict(
            fine_tuned_model=name,
            final_checkpoint=str(result.final_checkpoint),
            trained_tokens=trained_tokens,
        )
        lifecycle.succeed(job_id, owner, outcome, summary=result.summary)
    elif hooks.stop_reason == "pause":
        lifecycle.stopped_for_pause(job_id, owner, result.steps_completed)
    elif hooks.stop_reason == "cancel":
        lifecycle.release(job_id, owner, f"Training stopped at step {result.steps_completed}.")
    else:
        log.warning("job %s: lease lost to another worker; stopped", job_id)
    return None


def job_trackers(job: Job, start_step: int) -> Trackers:
    """The experiment trackers the job asked for (`integrations`), started; see worker.trackers."""
    from worker.trackers import RunContext, Trackers, build_trackers, public_config

    if not job.integrations:
        return Trackers([])
    settings = get_settings()
    metadata = job.job_metadata or {}
    member = metadata.get("sweep_member")
    context = RunContext(
        job_id=job.id,
        name=f"{job.suffix or job.id} {member}" if member else job.suffix or job.id,
        config=public_config(
            job.spec,
            job.plan,
            settings.data_dir,
            job_id=job.id,
            model=job.model,
            training_file=job.training_file,
            metadata=metadata,
        ),
        artifact_dir=Path(job.artifact_dir),
        resume_step=start_step,
        group=metadata.get("sweep_id"),
        tags={"replayft.model": job.model},
    )
    return build_trackers(job.integrations, context, settings)


# ---------------------------------------------------------------------------- several machines
def lead_machines(job_id: str, owner: str, spec) -> Any:
    """Make this worker (the job's lease owner) node 0 of a multi-machine job: pick the
    rendezvous address, record the node, and ask N-1 other training workers to join, one
    `run_node` task per node."""
    from replay_engine.launcher import Rendezvous

    settings = get_settings()
    with socket.socket() as s:  # a free port now; torchrun binds it a moment later
        s.bind(("", 0))
        port = s.getsockname()[1]
    master = f"{settings.node_address or socket.gethostname()}:{port}"
    nodes, per_node = spec.distributed.nodes, spec.distributed.gpus_per_node
    with session_scope() as session:
        session.add(JobNode(job_id=job_id, leader=owner, node_rank=0, worker=owner))
        add_event(
            session,
            job_id,
            f"Training on {nodes} machines x {per_node} processes ({spec.distributed.strategy}); "
            f"waiting for {nodes - 1} more worker(s) to join at {master}.",
            master=master,
        )
        for node_rank in range(1, nodes):
            enqueue(session, RUN_NODE, job_id, owner, node_rank, master)
        session.commit()
    return Rendezvous(0, master, rendezvous_timeout(spec))


def rendezvous_timeout(spec) -> float:
    """How long this job's machines wait for each other: its own value, else the deployment's."""
    return spec.distributed.rendezvous_timeout or get_settings().rendezvous_timeout


def nodes_missing(job_id: str, leader: str, spec, rendezvous) -> Exception:
    """The readable error of a rendezvous that timed out: how many machines came."""
    from replay_engine.launcher import NodesMissing

    with session_scope() as session:
        joined = len(
            session.scalars(
                select(JobNode.pk).where(JobNode.job_id == job_id, JobNode.leader == leader)
            ).all()
        )
    nodes = spec.distributed.nodes
    return NodesMissing(
        f"only {joined} of the {nodes} machines this job needs joined within "
        f"{rendezvous.timeout:g}s; it needs {nodes} idle training workers that share the data "
        "folder (or ask for fewer nodes)"
    )


def finish_node(job_id: str, leader: str, node_rank: int, *, status: str) -> None:
    with session_scope() as session:
        session.execute(
            update(JobNode)
            .where(
                JobNode.job_id == job_id,
                JobNode.leader == leader,
                JobNode.node_rank == node_rank,
            )
            .values(status=status, finished_at=now())
        )
        session.commit()


def requeue_after_failure(job_id: str, owner: str, exc: BaseException) -> bool:
    """A run that failed for a reason outside the job goes back to the queue to resume from its
    last checkpoint, like a job whose worker died, up to `max_job_attempts` starts: a
    multi-machine run whose ranks failed without a richer error (a machine or its network went
    away, a rank was killed; it resumes on a new rendezvous), or a transient database error. False:
    not requeued (out of attempts, or the job was cancelled or paused meanwhile)."""
    what = "A database error" if transient_db_error(exc) else "A machine of this job failed"
    if not lifecycle.requeue(job_id, owner, f"{what} ({str(exc)[:300]})"):
        return False
    log.warning("job %s: %s (%s); requeued", job_id, what, exc)
    return True


def run_node(job_id: str, leader: str, node_rank: int, master: str) -> None:
    """Be machine `node_rank` of the run of a multi-machine job that worker `leader` holds: run
    this machine's ranks until that run ends. The leader (node 0) holds the lease, reports
    progress and decides the outcome; this only trains. A redelivered task, or one from an
    earlier run of the job (its lease has moved on), does nothing."""
    from sqlalchemy.exc import IntegrityError

    from replay_engine.launcher import Rendezvous, join
    from replay_engine.spec import JobSpec, upgrade_spec_data

    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    try:
        with session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            if job is None or job.status != "running" or job.lease_owner != leader:
                return
            spec = JobSpec.model_validate(upgrade_spec_data(job.spec))
            artifact_dir = job.artifact_dir
            session.add(JobNode(job_id=job_id, leader=leader, node_rank=node_rank, worker=owner))
            add_event(
                session,
                job_id,
                f"Machine {node_rank} of {spec.distributed.nodes} joined ({socket.gethostname()}).",
                node_rank=node_rank,
            )
            session.commit()
    except IntegrityError:
        return  # this node of this run is already running somewhere

    over = False

    def run_over() -> bool:
        # the leader finished, stopped, failed or lost the job (a requeue gives a new leader)
        nonlocal over
        with session_scope() as session:
            holder = session.scalar(select(Job.lease_owner).where(Job.id == job_id))
        over = holder != leader
        return over

    timeout = rendezvous_timeout(spec)
    rc = 1
    try:
        rc = join(spec, artifact_dir, Rendezvous(node_rank, master, timeout), should_leave=run_over)
    finally:
        finish_node(job_id, leader, node_rank, status="finished" if rc == 0 or over else "failed")
    if rc != 0 and not over:
        log.warning("job %s node %d: training processes exited with %s", job_id, node_rank, rc)
