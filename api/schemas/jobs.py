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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from api.schemas.common import ID_MAX_LENGTH, db_string
from control import fields
from control.statuses import STATUSES
from replay_engine.spec import EvalSpec, JobSpec, LoraSpec, MethodSpec, ReplaySpec, Seed

ModelName = db_string(500)  # jobs.model
FileId = db_string(ID_MAX_LENGTH)
DatasetName = db_string(300)  # a replay file id or a registered corpus (models.id)
MetadataKey = db_string(64)  # OpenAI's limits on metadata
MetadataValue = db_string(512)

JobStatus = Literal[STATUSES]
EVAL_LIMIT = JobSpec.model_fields["evals"].metadata[0].max_length


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _optional(spec_model: type[BaseModel], name: str, **override: Any) -> tuple[Any, Any]:
    """A spec field as an optional request field: the spec's type, bounds and description, unset
    (None) meaning the engine's default; a nested spec model becomes its all-optional twin."""
    info = spec_model.model_fields[name]
    annotation = override.get("annotation", info.annotation)
    if info.metadata and "annotation" not in override:  # bounds pydantic moved off the type
        annotation = Annotated[(annotation, *info.metadata)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        annotation = _partial(annotation)
    if name in fields.AUTO:
        annotation = annotation | Literal["auto"]
    return annotation | None, Field(None, description=info.description)


def _partial(spec_model: type[BaseModel]) -> type[BaseModel]:
    """The request twin of a nested spec model (lr_scheduler, distributed): every field optional."""
    return create_model(
        spec_model.__name__.removesuffix("Spec"),
        __base__=_Strict,
        __doc__=spec_model.__doc__,
        **{name: _optional(spec_model, name) for name in spec_model.model_fields},
    )


_lora = {name: _optional(LoraSpec, name) for name in LoraSpec.model_fields}
_lora["target_modules"] = _optional(
    LoraSpec, "target_modules", annotation=list[db_string(200)] | Literal["all-linear"]
)
Adapter = create_model(
    "Adapter",
    __base__=_Strict,
    __doc__="ReplayFT extra: train low-rank adapters on a frozen base instead of every weight "
    "(the engine's `method`, flat; named `adapter` so it never collides with OpenAI's "
    "`method`). Unset fields take the engine's defaults (r 16, alpha 32, dropout 0, all-linear, "
    "merged).",
    type=(
        Literal["lora", "qlora"],
        Field(description="lora, or qlora (4-bit base; needs a CUDA worker with bitsandbytes)."),
    ),
    **_lora,
    export=_optional(MethodSpec, "export"),
)

# OpenAI's three knobs ("auto" = the engine's default) and ReplayFT's extras: every spec field
# that control.fields.HYPERPARAMETERS lists, as the spec declares it.
Hyperparameters = create_model(
    "Hyperparameters",
    __base__=_Strict,
    __doc__="OpenAI's three knobs (\"auto\" = the engine's default) and ReplayFT's extras, "
    "named, typed and bounded as in the engine's spec.",
    learning_rate_multiplier=(
        Annotated[float, Field(gt=0)] | Literal["auto"] | None,
        Field(None, description="Multiplies the default peak learning rate (3e-4)."),
    ),
    **{name: _optional(JobSpec, name) for name in fields.HYPERPARAMETERS},
    adapter=(Adapter | None, None),
)


class Supervised(_Strict):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(_Strict):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised | None = None


# Generic replay (ReplayFT extra): the engine's `replay`, with its data named by file id or
# registered corpus, and its other fields as the spec declares them.
Replay = create_model(
    "Replay",
    __base__=_Strict,
    dataset=(
        DatasetName | list[DatasetName] | None,
        Field(
            None, description="A `replay` file id or a registered corpus name (or a list of them)."
        ),
    ),
    validation_dataset=(
        FileId | None,
        Field(
            None,
            description="A `fine-tune` file id of generic text held out for val_loss_generic (as "
            "validation_file is for the target); default: documents held out of `dataset`.",
        ),
    ),
    **{
        name: _optional(ReplaySpec, name)
        for name in ReplaySpec.model_fields
        if name not in ("dataset", "validation_dataset")
    },
)


def _eval_field(name: str, **override: Any) -> tuple[Any, Any]:
    """An EvalSpec field as the request declares it: same type, bounds, default, description."""
    info = EvalSpec.model_fields[name]
    annotation = override.get("annotation", info.annotation)
    if info.metadata and "annotation" not in override:
        annotation = Annotated[(annotation, *info.metadata)]
    default = info.get_default(call_default_factory=True) if not info.is_required() else ...
    return annotation, Field(default, description=override.get("description", info.description))


# A task eval (ReplayFT extra): the engine's EvalSpec with its file named by id
Eval = create_model(
    "Eval",
    __base__=_Strict,
    __doc__="A task eval scored before training, at each checkpoint and at the end; its "
    "metrics are eval/<name>/accuracy (and accuracy_norm for multiple_choice), correct, total.",
    **{
        name: _eval_field(name)
        for name in EvalSpec.model_fields
        if name not in ("file", "pattern", "max_tokens")
    },
    # unset, not 256: a multiple_choice eval that sets max_tokens is refused
    max_tokens=_optional(EvalSpec, "max_tokens"),
    file=_eval_field(
        "file", annotation=FileId | None, description="An `evals` file id (not for lm_eval)."
    ),
    pattern=_eval_field("pattern", annotation=db_string(1000) | None),
)


# Experiment trackers (ReplayFT extra beside OpenAI's wandb shape): each item names its kind in
# `type` and holds its options under a key of that name. Nothing here can carry a credential or
# a local path: keys come from the workers' environment, an MLflow URI must be one the
# deployment allows (checked in api.services.jobs), and TensorBoard writes in the job's folder.
WandbName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[^/\\#?%:\x00]+$"),
]


class WandbOptions(_Strict):
    """OpenAI's W&B integration: the run goes to `entity/project` under the job's id."""

    project: WandbName = Field(description="The W&B project the run is created in.")
    name: db_string(128) | None = Field(None, description="Display name; default: the job id.")
    entity: WandbName | None = Field(
        None, description="Team or user; default: the worker's W&B default entity."
    )
    tags: list[db_string(64)] | None = Field(None, max_length=64, description="Run tags.")


class WandbIntegration(_Strict):
    type: Literal["wandb"]
    wandb: WandbOptions


class MlflowOptions(_Strict):
    """ReplayFT extra: one MLflow run per job (resumed jobs continue it)."""

    tracking_uri: db_string(1000) | None = Field(
        None,
        description="One of the tracking URIs this deployment allows "
        "(REPLAYFT_MLFLOW_TRACKING_URI, REPLAYFT_MLFLOW_TRACKING_URIS); default: its default.",
    )
    experiment: db_string(256) = Field("replayft", min_length=1, description="Experiment name.")
    run_name: db_string(250) | None = Field(None, description="Default: the job id.")


class MlflowIntegration(_Strict):
    type: Literal["mlflow"]
    mlflow: MlflowOptions = Field(default_factory=MlflowOptions)


class TensorBoardOptions(_Strict):
    """ReplayFT extra: event files written in the job's folder and, once the job has ended,
    one of its `result_files` (a tar.gz of the log directory)."""


class TensorBoardIntegration(_Strict):
    type: Literal["tensorboard"]
    tensorboard: TensorBoardOptions = Field(default_factory=TensorBoardOptions)


Integration = Annotated[
    WandbIntegration | MlflowIntegration | TensorBoardIntegration, Field(discriminator="type")
]
INTEGRATION_TYPES = ("wandb", "mlflow", "tensorboard")


class TrainingRequest(BaseModel):
    """The fields a fine-tuning job and a sweep of jobs share: what to train, on what, how."""

    model: ModelName = "replayft/llama-tiny"
    training_file: FileId
    validation_file: FileId | None = None
    suffix: db_string(64) | None = None
    seed: Seed | None = None
    priority: int = Field(
        0,
        ge=-100,
        le=100,
        description="ReplayFT extra: order among the team's own queued jobs (higher starts "
        "first). Between teams the scheduler shares workers fairly, whatever the priorities.",
    )
    metadata: dict[MetadataKey, MetadataValue] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(None, description="Deprecated OpenAI form.")
    evals: list[Eval] | None = Field(
        None,
        max_length=EVAL_LIMIT,
        description="ReplayFT extra: task evals (files of purpose `evals`) scored before "
        "training, at each checkpoint and at the end.",
    )
    integrations: list[Integration] | None = Field(
        None,
        max_length=len(INTEGRATION_TYPES),
        description="Experiment trackers the run's metrics, plan and spec are logged to: wandb "
        "(OpenAI's shape), mlflow and tensorboard (ReplayFT extras), at most one of each.",
    )


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


class EvalSummary(BaseModel):
    """One task eval's score on the base model (step 0) and at its last run (the end)."""

    kind: Literal["generation", "multiple_choice", "lm_eval"]
    generic: bool = Field(description="Marked `generic`: a measure of forgetting.")
    initial_accuracy: float | None = None
    final_accuracy: float | None = None
    accuracy_change: float | None = Field(None, description="final - initial.")
    initial_accuracy_norm: float | None = Field(None, description="multiple_choice only.")
    final_accuracy_norm: float | None = None
    accuracy_norm_change: float | None = None
    total: int | None = Field(None, description="Records scored.")
    step: int | None = Field(None, description="The step of final_accuracy.")


class JobSummary(BaseModel):
    """ReplayFT extra: the engine's end-of-run summary, present once a job has succeeded.
    `initial_*` are the base model's (step 0, before training), `final_*` the trained model's."""

    final_val_loss_target: float | None = None
    final_val_loss_generic: float | None = None
    initial_val_loss_target: float | None = None
    initial_val_loss_generic: float | None = None
    target_gain: float | None = Field(
        None,
        description="initial_val_loss_target - final_val_loss_target: how much the target "
        "loss fell (positive = learned).",
    )
    generic_change: float | None = Field(
        None,
        description="final_val_loss_generic - initial_val_loss_generic: how much the generic "
        "loss rose (positive = forgetting).",
    )
    evals: dict[str, EvalSummary] = Field(
        default_factory=dict, description="Each task eval before and after, by name."
    )
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
    priority: int = 0
    estimated_finish: int | None
    integrations: list[Integration] = Field(
        default_factory=list, description="The experiment trackers as requested."
    )
    metadata: dict[str, str] | None
    suffix: str | None = None
    progress: Progress
    pausing: bool = Field(
        False,
        description="ReplayFT extra: a pause was requested and the worker is saving a "
        "checkpoint; the status becomes `paused` once it has.",
    )
    replay: dict[str, Any] | None
    evals: list[dict[str, Any]] | None = Field(
        None, description="ReplayFT extra: the task evals as requested (file ids)."
    )
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


class CheckpointDownloadLink(BaseModel):
    """ReplayFT extra: a URL that downloads one checkpoint without an Authorization header, for a
    browser's own download; it holds no API key and stops working at `expires_at`."""

    object: Literal["fine_tuning.job.checkpoint.download_link"] = (
        "fine_tuning.job.checkpoint.download_link"
    )
    url: str
    expires_at: int
