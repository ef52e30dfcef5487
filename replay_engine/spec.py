"""The job spec: one typed description of a training run.

A spec loads from YAML (`load_spec`) and the API accepts the same fields as JSON. Field names
follow the public API (docs/api.md): the replay knobs live under `replay`
(`fraction` r, `target_stage2_allocation` a, `stage2_duration` d), the hyperparameters sit at the
top level.

Validation that needs only the spec itself happens here and reports *every* problem at once, each
with its field path (`replay.fraction`), through `SpecError`. A bound that holds for one field
alone (r in [0, 1), a seed below 2^31, at most 2^16 sequences a batch) is declared on the field,
so JSON schemas show it and nothing absurd gets past parsing; `JobSpec.check` keeps the rules
that tie fields together. No float may be NaN or infinite. Validation that needs the data (how
many target sequences there are, whether r/a/d are consistent with them) happens when the schedule
is resolved (`schedule.resolve_plan`), and raises the same error type.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError


class SpecError(ValueError):
    """A spec (or its combination with the data) is invalid.

    `errors` is a list of (field path, message) pairs, so an API can turn the first into a
    `param` and a CLI can print them all.
    """

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{path}: {msg}" for path, msg in errors))

    @property
    def param(self) -> str:
        return self.errors[0][0]


_BOUND_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
}


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounded(kind: type, *, ge=None, gt=None, le=None, lt=None) -> Any:
    """`kind` (int or float) limited to an interval declared on the field, so a JSON schema
    shows it; a value outside reads `must be in [0, 1), got 1.5` rather than pydantic's
    one-sided wording. Floats must also be finite."""
    low = f"[{_number(ge)}" if ge is not None else f"({_number(gt)}" if gt is not None else None
    high = f"{_number(le)}]" if le is not None else f"{_number(lt)})" if lt is not None else None
    if low and high:
        rule = f"in {low}, {high}"
    elif low:
        rule = (">= " if ge is not None else "> ") + low[1:]
    else:
        rule = ("<= " if le is not None else "< ") + (high or "")[:-1]

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            kind_of_error = exc.errors()[0]["type"]
            if kind_of_error not in _BOUND_ERRORS:
                raise
            finite = "a finite number " if kind_of_error == "finite_number" else ""
            raise PydanticCustomError(
                "out_of_range", f"must be {finite}{rule}, got {{value}}", {"value": value}
            ) from None

    extra = {"allow_inf_nan": False} if kind is float else {}
    return Annotated[kind, Field(ge=ge, gt=gt, le=le, lt=lt, **extra), WrapValidator(check)]


# Bounds on single fields (the API's request schemas share `Seed`). Steps and seeds are stored
# in 32-bit integer columns by the service; the batch, sequence, eval and epoch maxima are far past
# any real run and keep the schedule's arithmetic finite (n_epochs 1e308 overflowed it).
INT32_END = 2**31
MAX_BATCH_SIZE = 2**16
MAX_SEQ_LEN = 2**20
MAX_EVAL_SEQUENCES = 2**16
MAX_EPOCHS = 10_000
MAX_RENDEZVOUS_SECONDS = 7 * 24 * 3600  # a week: longer is a queue, not a wait
Seed = bounded(int, ge=0, lt=INT32_END)
Steps = bounded(int, ge=1, lt=INT32_END)  # a step count or interval
BatchSize = bounded(int, ge=1, le=MAX_BATCH_SIZE)
Share = bounded(float, ge=0, le=1)  # a ratio in [0, 1]


def _as_list(value: Any) -> Any:
    """A single path may be given where a list of paths is expected."""
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML spec must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReplaySpec(_Strict):
    """Generic replay: which generic data to mix back in, and how much, when."""

    dataset: list[str] = Field(
        default_factory=list,
        description="Generic data files (JSONL text, .txt or Parquet). Empty means no replay data.",
    )
    validation_dataset: list[str] = Field(
        default_factory=list,
        description="Held-out generic files for val_loss_generic; empty = hold out documents of `dataset`.",
    )
    fraction: bounded(float, ge=0, lt=1) | None = Field(
        default=None, description="r: share of stage-2 sequences that are generic, in [0, 1)."
    )
    target_stage2_allocation: Share | None = Field(
        default=None, description="a: fraction of the (epoched) target data placed in stage 2."
    )
    stage2_duration: bounded(float, gt=0, le=1) | None = Field(
        default=None, description="d: stage-2 length as a fraction of all steps, in (0, 1]."
    )

    @field_validator("dataset", "validation_dataset", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)


class LRSchedulerSpec(_Strict):
    """Learning-rate schedule; the LR is a pure function of the step (schedule.lr_at)."""

    type: Literal["wsd", "cosine", "linear", "constant"] = "wsd"
    warmup_ratio: Share = Field(0.01, description="warmup steps = floor(warmup_ratio * steps)")
    decay_ratio: Share = Field(0.1, description="WSD only: share of steps in the final decay")
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = Field(
        "linear", description="WSD only: shape of the final decay"
    )
    min_lr_ratio: Share = Field(0.0, description="the LR decays to min_lr_ratio * learning_rate")


class DistributedSpec(_Strict):
    """How many processes (one per GPU) train the job together, and how they share the model.

    `ddp` replicates the model and all-reduces gradients; `fsdp` (FSDP2, `fully_shard`) shards
    parameters, gradients and optimizer state, for models whose training state does not fit one
    GPU. Both take disjoint slots of the same global batch, so the run's data and losses do not
    depend on the process count. Launched with torchrun (the worker does it for you).
    """

    strategy: Literal["ddp", "fsdp"] = "ddp"
    gpus_per_node: BatchSize = Field(
        1, description="Processes per machine, one per GPU (torchrun's nproc-per-node)."
    )
    nodes: BatchSize = Field(1, description="Machines; more than 1 needs a torchrun per machine.")
    rendezvous_timeout: bounded(float, gt=0, le=MAX_RENDEZVOUS_SECONDS) | None = Field(
        None,
        description="Seconds a multi-machine run waits for all its machines before failing; "
        "unset: the service's REPLAYFT_RENDEZVOUS_TIMEOUT, or replayft train's "
        "--rendezvous-timeout (600).",
    )

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes


class LoraSpec(_Strict):
    """LoRA adapter settings (peft's LoraConfig)."""

    r: bounded(int, ge=1, le=MAX_BATCH_SIZE) = Field(16, description="Adapter rank.")
    alpha: float = Field(32.0, description="Scaling numerator: updates are scaled by alpha / r.")
    dropout: bounded(float, ge=0, lt=1) = Field(0.0, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or all-linear (every linear but the head).",
    )


class MethodSpec(_Strict):
    """What is trained: every weight (full), or low-rank adapters on a frozen base (lora), or
    adapters on a 4-bit quantized base (qlora: CUDA + bitsandbytes only)."""

    type: Literal["full", "lora", "qlora"] = "full"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    export: Literal["merged", "adapter"] = Field(
        "merged",
        description="LoRA checkpoints: merged = a plain model folder (adapter folded in), "
        "adapter = the adapter only (load with peft onto the base).",
    )


MAX_EVALS = 32
MAX_EVAL_TOKENS = 4096
EVAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class EvalSpec(_Strict):
    """A task eval run on the model before training, at each checkpoint and at the end
    (replay_engine/evals.py). Its metrics are `eval/<name>/accuracy` and friends."""

    name: str = Field(
        pattern=EVAL_NAME_PATTERN,
        description="Metric name: letters, digits, '_', '.', '-' (at most 64; starts with a "
        "letter or digit).",
    )
    file: str | None = Field(
        None,
        description="The eval set: a JSON Lines file of one kind (see kind); not for lm_eval.",
    )
    kind: Literal["generation", "multiple_choice", "lm_eval"] = Field(
        description="generation: {prompt or messages, reference}, answered greedily and scored; "
        "multiple_choice: {context, choices, label}, scored by log-likelihood; lm_eval: a task "
        "of EleutherAI's evaluation harness (`task`), its acc as accuracy."
    )
    task: str | None = Field(
        None,
        max_length=200,
        description="lm_eval only: the harness's task name (registered, or a task YAML in "
        "the worker's REPLAYFT_LM_EVAL_TASKS folder).",
    )
    scorer: Literal["exact_match", "contains", "numeric", "regex"] | None = Field(
        None, description="generation only; default exact_match."
    )
    pattern: str | None = Field(
        None,
        description="regex scorer only: its first capture group (or whole match) is compared "
        "to the reference.",
    )
    generic: bool = Field(
        False,
        description="Measures general ability (forgetting): the job summary reports it "
        "before and after training.",
    )
    max_tokens: bounded(int, ge=1, le=MAX_EVAL_TOKENS) = Field(
        256, description="generation only: most tokens generated per answer (default 256)."
    )
    limit: bounded(int, ge=1, lt=INT32_END) | None = Field(
        None, description="Score only the first `limit` records."
    )

    def problems(self, where: str) -> list[tuple[str, str]]:
        """Fields that do not fit together, each as (`where`.field, message)."""
        errors = []
        if self.kind == "lm_eval":
            if not self.task:
                errors.append((f"{where}.task", "an lm_eval eval names the harness's task"))
            if self.file is not None:
                errors.append((f"{where}.file", "lm_eval tasks bring their own data"))
        else:
            if self.file is None:
                errors.append((f"{where}.file", f"a {self.kind} eval needs its file"))
            if self.task is not None:
                errors.append((f"{where}.task", "only for lm_eval evals"))
        if self.kind in ("multiple_choice", "lm_eval"):
            for name in ("scorer", "pattern", "max_tokens"):
                if name in self.model_fields_set and getattr(self, name) is not None:
                    errors.append((f"{where}.{name}", "only for generation evals"))
        elif self.scorer == "regex":
            if not self.pattern:
                errors.append((f"{where}.pattern", "the regex scorer needs a pattern"))
            else:
                try:
                    re.compile(self.pattern)
                except re.error as exc:
                    errors.append((f"{where}.pattern", f"not a valid regular expression: {exc}"))
        elif self.pattern is not None:
            errors.append((f"{where}.pattern", "only for the regex scorer"))
        return errors


class JobSpec(_Strict):
    """Everything that determines a run. Same spec + same seed = same tokens and same losses."""

    # --- what to train
    model: str = Field(
        description="Preset (replayft/llama-tiny ...), local Hugging Face folder, ReplayFT "
        "checkpoint folder, hub id, or a .gguf file path."
    )
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `model` (a folder or hub id)."
    )
    training_file: list[str] = Field(
        default_factory=list,
        description="Target data (JSONL chat, prompt/completion or text). Empty = pre-training.",
    )
    validation_file: list[str] = Field(
        default_factory=list,
        description="Held-out target data; empty = hold out documents of `training_file`.",
    )
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    target_subset_fraction: bounded(float, gt=0, le=1) = Field(
        1.0,
        description="Train on this share of the target documents (after the validation holdout); "
        "with one seed, smaller shares are subsets of larger ones. For data-efficiency reference "
        "runs.",
    )

    # --- hyperparameters (names as in the API)
    n_epochs: bounded(float, gt=0, le=MAX_EPOCHS) = Field(
        1.0, description="Passes over the target training data."
    )
    batch_size: BatchSize = Field(8, description="Sequences per optimizer step.")
    micro_batch_size: BatchSize | None = Field(
        None,
        description="Sequences per forward pass; batch_size / micro_batch_size = accumulation.",
    )
    seq_len: bounded(int, ge=8, le=MAX_SEQ_LEN) = Field(
        512, description="Tokens per packed sequence."
    )
    packing_attention: Literal["document", "causal"] = Field(
        "document",
        description="Attention in a packed sequence: document = each token sees only earlier "
        "tokens of its own document (position ids restart per document); causal = every earlier "
        "token of the sequence, across document boundaries (as many pre-training runs do).",
    )
    learning_rate: bounded(float, gt=0) = Field(3e-4, description="Peak learning rate.")
    lr_scheduler: LRSchedulerSpec = Field(default_factory=LRSchedulerSpec)
    total_steps: Steps | None = Field(
        None, description="Fix compute: total optimizer steps. Unset = derived from the data."
    )
    optimizer_state: Literal["reset", "carry"] = Field(
        "reset", description="carry: load AdamW moments from the ReplayFT checkpoint in `model`."
    )
    weight_decay: bounded(float, ge=0) = Field(
        0.1, description="Decoupled; not applied to norms, embeddings, biases."
    )
    adam_betas: tuple[bounded(float, ge=0, lt=1), bounded(float, ge=0, lt=1)] = (0.9, 0.95)
    adam_eps: float = 1e-8
    grad_clip: bounded(float, ge=0) = Field(1.0, description="Max global grad norm; 0 disables.")
    seed: Seed = 0

    # --- evaluation and checkpoints
    eval_interval: Steps | None = Field(None, description="Steps between evals; unset = total/20.")
    eval_sequences: bounded(int, ge=1, le=MAX_EVAL_SEQUENCES) = Field(
        64, description="Held-out sequences per source per eval."
    )
    val_fraction: bounded(float, gt=0, lt=1) = Field(
        0.05, description="Share of documents held out when no validation file."
    )
    checkpoint_interval: Steps | None = Field(
        None, description="Steps between checkpoints; unset = total/10."
    )
    keep_checkpoints: Steps = Field(
        2, description="Newest step checkpoints kept (the final one always is)."
    )

    evals: list[EvalSpec] = Field(
        default_factory=list,
        max_length=MAX_EVALS,
        description="Task evals scored before training (step 0), at each checkpoint and at the "
        "end: metrics eval/<name>/accuracy, correct, total.",
    )

    # --- where and how
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    compile: bool = Field(False, description="torch.compile each transformer block (GPU speed).")
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, ~30% more compute."
    )
    peak_flops: bounded(float, gt=0) | None = Field(
        None,
        description="Peak FLOP/s of one device for the mfu metric; unset = looked up for known GPUs.",
    )
    cache_dir: str | None = Field(
        None, description="Tokenized-data cache; unset = $REPLAYFT_CACHE_DIR or ~/.cache/replayft."
    )

    @field_validator("training_file", "validation_file", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)

    # ------------------------------------------------------------------ derived values
    @property
    def mode(self) -> Literal["pretrain", "finetune", "midtrain"]:
        if not self.training_file:
            return "pretrain"
        d = self.replay.stage2_duration
        return "midtrain" if d is not None and d < 1 else "finetune"

    @property
    def grad_accum_steps(self) -> int:
        return self.batch_size // (self.micro_batch_size or self.batch_size)

    def check(self) -> None:
        """Raise SpecError listing every problem that the spec alone reveals across fields (each
        field's own bounds were checked when it was parsed)."""
        errors: list[tuple[str, str]] = []
        r, a, d = (
            self.replay.fraction,
            self.replay.target_stage2_allocation,
            self.replay.stage2_duration,
        )

        if r and not self.replay.dataset:
            errors.append(("replay.dataset", "replay.fraction > 0 needs generic data to replay"))
        if not self.training_file and not self.replay.dataset:
            errors.append(("training_file", "no data: give training_file and/or replay.dataset"))
        if self.validation_file and not self.training_file:
            errors.append(("validation_file", "given without training_file"))
        if not self.training_file and self.total_steps is None:
            errors.append(("total_steps", "pre-training (no training_file) needs total_steps"))
        if (
            self.training_file
            and self.total_steps is None
            and a is not None
            and a < 1
            and d is None
        ):
            errors.append(
                (
                    "replay.stage2_duration",
                    "needed with target_stage2_allocation < 1 unless total_steps is set",
                )
            )
        if d == 1 and a is not None and a < 1:
            errors.append(
                (
                    "replay.target_stage2_allocation",
                    "must be 1 when stage2_duration is 1 (there is no stage 1)",
                )
            )
        if self.target_subset_fraction < 1 and not self.training_file:
            errors.append(("target_subset_fraction", "given without training_file"))
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            errors.append(("micro_batch_size", f"must divide batch_size ({self.batch_size})"))
        sched = self.lr_scheduler
        if sched.type == "wsd" and sched.warmup_ratio + sched.decay_ratio > 1:
            errors.append(("lr_scheduler.decay_ratio", "warmup_ratio + decay_ratio must be <= 1"))
        errors += self._check_distributed()
        errors += self._check_evals()
        if self.method.type == "qlora" and self.method.export != "adapter":
            # merging needs the de-quantized base, which a 4-bit run never holds
            errors.append(("method.export", "qlora checkpoints export the adapter only"))
        if self.method.type != "full" and self.optimizer_state == "carry":
            errors.append(
                ("optimizer_state", "carry is for full fine-tuning; LoRA starts fresh adapters")
            )
        if errors:
            raise SpecError(errors)

    def _check_evals(self) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, one in enumerate(self.evals):
            where = f"evals[{i}]"
            errors += one.problems(where)
            if one.name in seen:
                errors.append((f"{where}.name", f"{one.name!r} names an earlier eval too"))
            seen.add(one.name)
        if self.evals and self.distributed.strategy == "fsdp" and self.distributed.world_size > 1:
            # rank 0 scores the evals alone, and an FSDP forward needs every rank
            errors.append(("evals", "not supported with distributed.strategy fsdp; use ddp"))
        return errors

    def _check_distributed(self) -> list[tuple[str, str]]:
        return self.batch_split_errors(self.distributed.world_size)

    def batch_split_errors(self, world: int) -> list[tuple[str, str]]:
        """Each of `world` processes takes batch_size / world sequences of every step, in
        micro-batches: both must divide evenly. The trainer checks the world it actually got."""
        if self.batch_size % world:
            return [("batch_size", f"must be divisible by the {world} processes of `distributed`")]
        if self.micro_batch_size is not None and (self.batch_size // world) % self.micro_batch_size:
            return [
                (
                    "micro_batch_size",
                    f"must divide the per-process batch ({self.batch_size // world} = "
                    f"batch_size / {world} processes)",
                )
            ]
        return []


# Fields added to JobSpec after specs were first stored (job rows, checkpoint meta.json), with
# what a spec written before them meant. packing_attention is not its default: before the field
# existed, attention crossed documents.
_ADDED_FIELDS: dict[str, Any] = {"target_subset_fraction": 1.0, "packing_attention": "causal"}


def upgrade_spec_data(data: dict[str, Any]) -> dict[str, Any]:
    """A stored spec (plain data) with the fields added since it was written set to what it
    meant then, so an old job or checkpoint keeps running the way it was submitted."""
    return {**_ADDED_FIELDS, **data}


def field_path(loc: Sequence[Any], lists: Sequence[str] = ("evals",)) -> str:
    """An error location as a field path: `replay.fraction`, `adam_betas.1`, and an item of
    the list of evals (or another of `lists`) as `evals[0].scorer`."""
    path, previous = "", None
    for part in loc:
        if str(part).isdigit() and previous in lists:
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
        previous = part
    return path


def _pydantic_errors(exc: ValidationError) -> SpecError:
    return SpecError([(field_path(err["loc"]) or "spec", err["msg"]) for err in exc.errors()])


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """Build and check a spec from plain data (parsed YAML or JSON)."""
    if not isinstance(data, dict):
        raise SpecError([("spec", "must be a mapping of field names to values")])
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_errors(exc) from None
    spec.check()
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> JobSpec:
    """Load a YAML spec. Relative data paths are taken relative to the spec file. `overrides`:
    `FIELD=VALUE` settings applied on top (see `apply_overrides`)."""
    return parse_spec(apply_overrides(read_spec_yaml(path), overrides))


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """Spec data with `FIELD=VALUE` settings applied (the commands' `--set`): FIELD is a field
    name, dotted for a nested one (`replay.fraction`), and VALUE is read as YAML (`0.1`,
    `[a.jsonl, b.jsonl]`, `{type: cosine}`). Data paths given this way are taken as written
    (relative to the working directory), not relative to the spec file."""
    if not overrides:
        return data
    if not isinstance(data, dict):
        raise SpecError([("spec", "must be a mapping of field names to values")])
    data = copy.deepcopy(data)
    for override in overrides:
        field, sep, text = override.partition("=")
        if not sep or not field.strip():
            raise SpecError([("--set", f"expected FIELD=VALUE, got {override!r}")])
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([(field, f"--set value {text!r} is not valid YAML: {exc}")]) from None
        *parents, leaf = field.strip().split(".")
        node = data
        for i, name in enumerate(parents):
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: i + 1])
                raise SpecError([(field, f"{where} is not a mapping, so it has no {field}")])
            node = child
        node[leaf] = value
    return data


def read_spec_yaml(path: str | Path) -> Any:
    """A YAML spec file as plain data, relative data paths resolved against its folder, not yet
    checked (for tools that add their own keys, such as a sweep file's `sweep:`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError([("spec", f"{path} is not valid YAML: {exc}")]) from None
    if isinstance(data, dict):
        data = _resolve_paths(data, path.parent)
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def resolve(p: str) -> str:
        candidate = base / p
        return str(candidate) if not Path(p).is_absolute() and candidate.exists() else p

    def resolve_many(v: Any) -> Any:
        if isinstance(v, str):
            return resolve(v)
        if isinstance(v, list):
            return [resolve(x) if isinstance(x, str) else x for x in v]
        return v

    data = dict(data)
    for key in ("training_file", "validation_file"):
        if key in data:
            data[key] = resolve_many(data[key])
    if isinstance(data.get("model"), str):
        data["model"] = resolve(data["model"])
    if isinstance(data.get("evals"), list):
        data["evals"] = [
            {**e, "file": resolve(e["file"])}
            if isinstance(e, dict) and isinstance(e.get("file"), str)
            else e
            for e in data["evals"]
        ]
    if isinstance(data.get("replay"), dict):
        replay = dict(data["replay"])
        for key in ("dataset", "validation_dataset"):
            if key in replay:
                replay[key] = resolve_many(replay[key])
        data["replay"] = replay
    return data
