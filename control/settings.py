"""Service settings, read once from `REPLAYFT_*` environment variables (pydantic-settings).

Every default points inside one data directory, so `replayft serve` with no configuration needs no
external service: SQLite for the database and kombu's SQLAlchemy transport over a second SQLite
file as the Celery broker. Setting `REPLAYFT_DATABASE_URL=postgresql://...` and
`REPLAYFT_BROKER_URL=redis://...` switches the same code to the distributed setup.

Paths are made absolute here, because the API and the worker are separate processes that may be
started from different working directories and must agree on where files live.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPLAYFT_", extra="ignore")

    data_dir: Path = Field(Path("./replayft-data"), description="Uploads, job artifacts, SQLite.")
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite in data_dir.")
    broker_url: str = Field("", description="Celery broker URL; empty = embedded SQLite broker.")
    max_upload_bytes: int = Field(1 << 30, description="Largest accepted upload, in bytes.")
    cache_dir: Path | None = Field(None, description="Engine token cache; unset = data_dir/cache.")
    lm_eval_tasks: Path | None = Field(
        None,
        description="Folder of lm-eval task YAML files (local data) that jobs' lm_eval evals "
        "may name, besides the harness's registered tasks.",
    )
    heartbeat_timeout: float = Field(
        60.0, description="Seconds without a heartbeat after which a running job is presumed lost."
    )
    max_job_attempts: int = Field(3, description="Times a job is started before it is failed.")
    node_address: str = Field(
        "",
        description="Host name or IP at which other workers reach this one, for multi-machine "
        "jobs it leads; empty = this machine's host name.",
    )
    rendezvous_timeout: float = Field(
        600.0,
        description="Seconds a multi-machine job waits for all its machines before failing.",
    )
    max_steps_per_job: int = Field(
        1_000_000,
        gt=0,
        description="Most optimizer steps one job may plan; a request over it is refused (400).",
    )
    max_tokens_per_job: int = Field(
        10**12,
        gt=0,
        description="Most tokens one job may train on (steps x batch_size x seq_len); a request "
        "over it is refused (400).",
    )
    team_max_running_jobs: int | None = Field(
        None,
        ge=1,
        description="Default for each team: most of its jobs training at once (more wait in "
        "the queue); unset = no limit. A team's own value (admin API) overrides it.",
    )
    team_max_queued_jobs: int | None = Field(
        None,
        ge=1,
        description="Default for each team: most of its jobs waiting (validating_files, queued "
        "or paused); a submission past it is refused with 429. Unset = no limit.",
    )
    team_monthly_tokens: int | None = Field(
        None,
        ge=1,
        description="Default for each team: tokens it may train on per UTC calendar month; a "
        "submission once it is spent is refused with 429 until the month ends. Unset = no limit.",
    )
    team_monthly_gpu_hours: float | None = Field(
        None,
        gt=0,
        description="Default for each team: GPU-hours (training time x processes) per UTC "
        "calendar month, enforced like team_monthly_tokens. Unset = no limit.",
    )
    sqlite_busy_timeout: float = Field(
        60.0, description="Seconds a SQLite writer waits for another one before 'locked'."
    )
    relay_interval: float = Field(
        0.5, description="Seconds between the outbox relay's looks for tasks to send."
    )
    redeliver_after: float = Field(
        120.0,
        description="Seconds after which a sent task whose row has not moved is sent again "
        "(doubling each time, at most an hour): a message lost with the broker is not lost work.",
    )
    sweep_interval: float = Field(
        30.0,
        description="Seconds between sweeps for files and jobs in a waiting state with no task.",
    )
    webhook_interval: float = Field(
        1.0, gt=0, description="Seconds between the webhook sender's looks for due deliveries."
    )
    webhook_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a webhook receiver has to answer one delivery before it counts as "
        "a failed attempt.",
    )
    webhook_retry_base: float = Field(
        10.0,
        gt=0,
        description="Seconds before the first retry of a webhook delivery that failed; each "
        "further retry waits twice as long, at most an hour.",
    )
    webhook_retry_for: float = Field(
        86400.0,
        gt=0,
        description="Seconds a webhook delivery is retried (from its event, or from a "
        "redelivery) before it is marked failed.",
    )
    webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description='Networks (CIDR, JSON list: ["10.0.0.0/8"]) webhook receivers may be in '
        "besides the public internet. Loopback, private, link-local and other non-public "
        "addresses are refused otherwise: when a webhook is created and again at each delivery, "
        "so a name that later resolves inside is caught then.",
    )
    default_tokenizer_model: str = Field(
        "replayft/llama-tiny", description="Tokenizer used for the token counts in file stats."
    )
    db_pool_size: int = Field(
        10, ge=1, description="Database connections an API or worker process keeps open."
    )
    db_max_overflow: int = Field(
        20, ge=0, description="Connections opened beyond db_pool_size under load, then closed."
    )
    db_pool_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a request waits for a database connection before it is refused "
        "with 503 and Retry-After (load shedding).",
    )
    max_line_bytes: int = Field(
        8 << 20,
        ge=1,
        description="Longest line an uploaded JSONL or text file may hold, in bytes; a longer "
        "one makes the file `error`, naming the line.",
    )
    token_count_chars: int = Field(
        8_000_000,
        ge=1,
        description="Characters of an upload's text tokenized for its token count; a larger "
        "file is still checked whole, but its count is extrapolated (stats.tokens_estimated), "
        "so validating it stays quick and other teams' files do not wait behind it.",
    )
    upload_stale_seconds: float = Field(
        3600.0,
        gt=0,
        description="A partial upload (files/.upload-*) not written to for this long belongs to "
        "no live request (a killed API) and is removed, at start-up and then periodically.",
    )

    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port at which each worker serves its Prometheus metrics (tasks, training "
        "steps and tokens, GPUs through NVML), summed over its processes; unset = none. One "
        "port per worker on a machine.",
    )
    # Experiment trackers (worker.trackers). Credentials are never settings of a job: W&B reads
    # WANDB_API_KEY (and WANDB_BASE_URL) from the worker's environment, MLflow its
    # MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN.
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None,
        description="W&B mode of jobs' wandb integrations; unset = W&B's own (WANDB_MODE, else "
        "online). offline writes the run under the job's folder only (`wandb sync` uploads it).",
    )
    wandb_entities: list[str] = Field(
        default_factory=list,
        description="W&B entities (teams or users) jobs' wandb integrations may log to, as a JSON "
        "list; empty = any the worker's key reaches. When set, a job must name one of them (the "
        "first is the default when it names none).",
    )
    mlflow_tracking_uri: str = Field(
        "",
        description="The MLflow tracking server a job's mlflow integration logs to when it names "
        "none; empty = a job must name one of mlflow_tracking_uris.",
    )
    mlflow_tracking_uris: list[str] = Field(
        default_factory=list,
        description="More MLflow tracking URIs a job may name (JSON list); a request never "
        "makes a worker log anywhere else.",
    )
    tracker_close_timeout: float = Field(
        60.0,
        ge=0,
        description="Seconds the end of a job waits for its trackers to send what they still "
        "hold; training itself never waits for them.",
    )

    inference_url: str = Field(
        "http://127.0.0.1:8001",
        description="Where the API reaches the model-serving process (`replayft inference`). "
        "It serves any model folder it is named, so keep it off public networks.",
    )
    serve_memory: str = Field(
        "4GiB",
        description="Memory the serving process keeps loaded models in (bytes, or e.g. 512MiB, "
        "8GB); past it the least recently used model is unloaded.",
    )
    serve_device: str = Field("auto", description="Serving device: auto, cpu, cuda or cuda:N.")
    serve_batch_window_ms: float = Field(
        10.0,
        ge=0,
        description="How long the serving process waits after a request for others to the same "
        "model to batch with it, in milliseconds.",
    )
    serve_batch_regroup_ms: float = Field(
        100.0,
        ge=0,
        description="After a batch of k requests, how long the next one waits for as many, in "
        "milliseconds: the clients of the last batch sending their next requests (at least the "
        "batch window).",
    )
    serve_max_batch: int = Field(
        16, ge=1, description="Most sequences (requests x n) generated in one batch."
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'replayft.db'}"
        # SQLAlchemy's bare "postgresql://" means psycopg2; we ship psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if self.database_url.startswith(prefix):
                self.database_url = "postgresql+psycopg://" + self.database_url[len(prefix) :]
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        self.cache_dir = (self.cache_dir or self.data_dir / "cache").expanduser().resolve()
        parse_bytes(self.serve_memory)  # a bad size fails at start-up, not at the first request
        for network in self.webhook_allowed_networks:  # likewise a bad network
            ipaddress.ip_network(network, strict=False)
        return self

    @property
    def serve_memory_bytes(self) -> int:
        return parse_bytes(self.serve_memory)

    @property
    def allowed_mlflow_uris(self) -> list[str]:
        """Tracking URIs a job's mlflow integration may log to: the default first."""
        uris = [self.mlflow_tracking_uri, *self.mlflow_tracking_uris]
        return list(dict.fromkeys(uri for uri in uris if uri))

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.files_dir, self.jobs_dir, self.cache_dir):
            path.mkdir(parents=True, exist_ok=True)

    def export_env(self) -> None:
        """Make the resolved values visible to child processes and to the engine."""
        os.environ["REPLAYFT_DATA_DIR"] = str(self.data_dir)
        os.environ["REPLAYFT_DATABASE_URL"] = self.database_url
        os.environ["REPLAYFT_BROKER_URL"] = self.broker_url
        os.environ["REPLAYFT_CACHE_DIR"] = str(self.cache_dir)
        if self.lm_eval_tasks is not None:
            os.environ["REPLAYFT_LM_EVAL_TASKS"] = str(self.lm_eval_tasks)


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(size: str | int) -> int:
    """'4GiB' -> 4 * 2**30, '500MB' -> 500 * 10**6, '1024' -> 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", str(size).lower())
    if match is None:
        raise ValueError(f"not a size: {size!r} (expected bytes or e.g. 512MiB, 4GiB, 8GB)")
    number, unit, binary = match.groups()
    scale = 1024 ** "kmgt".index(unit) * 1024 if binary and unit else _UNITS[unit]
    return int(float(number) * scale)


@lru_cache
def get_settings() -> Settings:
    return Settings()
