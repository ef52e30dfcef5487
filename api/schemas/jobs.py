"""Fine-tuning job schemas: the create body (OpenAI's fields plus ReplayFT's `replay` and extra
hyperparameters, LoRA among them as `adapter`), the job object, events, checkpoints and the plan.

Request models forbid unknown keys inside `hyperparameters` and `replay`, so a typo is a 400 with
its field path instead of a silently ignored setting; unknown top-level keys are ignored, as
OpenAI clients may send fields that ReplayFT does not use. Strings are bounded by their database
columns and may not hold NUL, and no number may be NaN or infinite (JSON parsers accept `NaN`);
the training settings' own bounds are the engine's (`replay_engine.spec`), checked when the
request is turned into a spec, so their errors name the field as the client set it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import ID_MAX_LENGTH, db_string
from replay_engine.spec import Seed

ModelName = db_string(500)  # jobs.model
FileId = db_string(ID_MAX_LENGTH)
DatasetName = db_string(300)  # a replay file id or a registered corpus (models.id)
MetadataKey = db_string(64)  # OpenAI's limits on metadata
MetadataValue = db_string(512)

JobStatus = Literal[
    "validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"
]
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LRScheduler(_Strict):
    type: Literal["wsd", "cosine", "linear", "constant"] = "wsd"
    warmup_ratio: float | None = None
    decay_ratio: float | None = None
    decay_shape: Literal["linear", "cosine", "1-sqrt"] | None = None
    min_lr_ratio: float | None = None


class Distributed(_Strict):
    """One job on several GPUs: torchrun processes on the worker's machine, or on several
    machines (one training worker each, sharing the data folder)."""

    strategy: Literal["ddp", "fsdp"] | None = Field(
        None, description="ddp replicates the model; fsdp shards it (large models)."
    )
    gpus_per_node: int | None = Field(None, description="GPUs (processes) per machine.")
    nodes: int | None = Field(
        None, description="Machines; each is a training worker, the first one reports."
    )
    rendezvous_timeout: float | None = Field(
        None,
        description="Seconds a multi-machine job waits for all its machines before failing "
        "(default: the deployment's REPLAYFT_RENDEZVOUS_TIMEOUT).",
    )


class Adapter(_Strict):
    """ReplayFT extra: train low-rank adapters on a frozen base instead of every weight (the
    engine's `method`; named `adapter` so it never collides with OpenAI's `method`). Unset
    fields take the engine's defaults (r 16, alpha 32, dropout 0, all-linear, merged)."""

    type: Literal["lora", "qlora"] = Field(
        description="lora, or qlora (4-bit base; needs a CUDA worker with bitsandbytes)."
    )
    r: int | None = Field(None, description="Adapter rank.")
    alpha: float | None = Field(None, description="Updates are scaled by alpha / r.")
    dropout: float | None = Field(None, description="Dropout on the adapter input.")
    target_modules: list[db_string(200)] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt, or all-linear (every linear but the head)."
    )
    export: Literal["merged", "adapter"] | None = Field(
        None,
        description="Checkpoints: merged = a plain model folder (adapter folded in); adapter = "
        "the peft adapter only. Either way the fine-tuned model can be the model of a next job.",
    )


class Hyperparameters(_Strict):
    """OpenAI's three knobs ("auto" = the engine's default) and ReplayFT's extras."""

    n_epochs: float | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = Field(
        None, description="Multiplies the default peak learning rate (3e-4)."
    )
    learning_rate: float | None = Field(
        None, description="Peak learning rate; wins over the multiplier."
    )
    lr_scheduler: LRScheduler | None = None
    seq_len: int | None = None
    packing_attention: Literal["document", "causal"] | None = Field(
        None,
        description="document (default): attention stays inside each packed document; causal: "
        "it crosses document boundaries within a sequence.",
    )
    total_steps: int | None = None
    optimizer_state: Literal["reset", "carry"] | None = None
    micro_batch_size: int | None = None
    eval_interval: int | None = None
    checkpoint_interval: int | None = None
    keep_checkpoints: int | None = None
    eval_sequences: int | None = None
    target_subset_fraction: float | None = Field(
        None, description="Train on this share of the target documents (nested per seed)."
    )
    distributed: Distributed | None = None
    adapter: Adapter | None = None


class Supervised(_Strict):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(_Strict):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised | None = None


class Replay(_Strict):
    dataset: DatasetName | list[DatasetName] | None = Field(
        None, description="A `replay` file id or a registered corpus name (or a list of them)."
    )
    fraction: float | None = Field(None, description="r: generic share of stage-2 batches.")
    target_stage2_allocation: float | None = Field(None, description="a")
    stage2_duration: float | None = Field(None, description="d")


class TrainingRequest(BaseModel):
    """The fields a fine-tuning job and a sweep of jobs share: what to train, on what, how."""

    model: ModelName = "replayft/llama-tiny"
    training_file: FileId
    validation_file: FileId | None = None
    suffix: db_string(64) | None = None
    seed: Seed | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(None, description="Deprecated OpenAI form.")


class JobCreate(TrainingRequest):
    model_config = ConfigDict(extra="ignore")

    replay: Replay | None = None


class JobError(BaseModel):
    code: str | None = None
    message: str
    param: str | None = None


class Progress(BaseModel):
    step: int = 0
    total_steps: int | None = None
    stage: int | None = None
    tokens_seen: int = 0
    eta_seconds: float | None = None


class LossSpike(BaseModel):
    """The initial rise of train_loss_target above its first value (the engine's SpikeTracker)."""

    initial_loss: float
    peak_loss: float
    peak_step: int
    height: float
    recovered_step: int | None = None
    duration: int | None = None


class JobSummary(BaseModel):
    """ReplayFT extra: the engine's end-of-run summary, present once a job has succeeded."""

    final_val_loss_target: float | None = None
    final_val_loss_generic: float | None = None
    loss_spike: LossSpike | None = None


class JobPublic(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: JobStatus
    error: JobError | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    training_file: str
    validation_file: str | None
    result_files: list[str]
    trained_tokens: int | None
    seed: int
    estimated_finish: int | None
    integrations: list[Any] = Field(default_factory=list)
    metadata: dict[str, str] | None
    suffix: str | None = None
    progress: Progress
    replay: dict[str, Any] | None
    summary: JobSummary | None = None


class JobEventPublic(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class CheckpointPublic(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]


class MetricsList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
