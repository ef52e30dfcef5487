"""Standard benchmarks through EleutherAI's evaluation harness (`lm-eval`, the `evals` extra).

`run_harness` loads a model the way inference does (presets, Hugging Face folders, ReplayFT
checkpoints, GGUF files) and hands the loaded model and tokenizer to the harness's own
Hugging Face wrapper, so the harness scores exactly the weights we would serve. Tasks are the
harness's registered names or YAML task files of your own under `include_path` (the registered
ones read their data from dataset hubs; a local YAML with `dataset_path: json` and
`dataset_kwargs.data_files` reads local files).

The result keeps the harness's numbers as they come, one dict per task:
`{"task": {"acc,none": 0.52, "acc_stderr,none": 0.05, ...}}`, plus the sample counts.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS_FOLDER_ENV = "REPLAYFT_LM_EVAL_TASKS"
NOT_SCORES = {"sample_len", "sample_count"}  # counts the harness reports beside its metrics


def tasks_folder() -> str | None:
    """The folder of local task YAML files that jobs' `lm_eval` evals may name (the worker's
    REPLAYFT_LM_EVAL_TASKS), besides the harness's registered tasks."""
    return os.environ.get(TASKS_FOLDER_ENV) or None


class HarnessMissing(RuntimeError):
    """lm-eval is an optional dependency: `pip install 'replayft[evals]'`."""


@dataclass
class HarnessResult:
    model: str
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat `harness/<task>/<metric>` numbers (stderr and non-numbers left out), the
        names a job's metrics use."""
        flat: dict[str, float] = {}
        for task, values in self.tasks.items():
            for key, value in values.items():
                name = key.split(",", 1)[0]
                if name in NOT_SCORES or "stderr" in name:
                    continue
                if not isinstance(value, int | float) or math.isnan(value):
                    continue
                flat[f"harness/{task}/{name}"] = float(value)
        return flat


@functools.lru_cache(maxsize=4)
def _index(include_path: str | None, defaults: bool) -> Any:
    """lm-eval's task index (kept: building it reads thousands of YAML files)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as e:  # the extra is not installed
        raise HarnessMissing(
            "lm-eval tasks need EleutherAI's lm-eval: pip install 'replayft[evals]'"
        ) from e
    return TaskManager(include_path=include_path, include_defaults=defaults)


def task_manager(tasks: list[str], include_path: str | Path | None = None) -> Any:
    """The task index holding `tasks`: `include_path`'s YAML files alone when they have them
    all, else with the harness's own. A task neither knows is a ValueError naming it."""
    path = str(include_path) if include_path else None
    manager = _index(path, False) if path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = _index(path, True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: give a registered task or a task "
            "YAML under the include path"
        )
    return manager


def evaluate_model(
    model: Any,
    tokenizer: Any,
    device: Any,
    tasks: list[str],
    *,
    name: str = "model",
    include_path: str | Path | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    seed: int = 0,
) -> HarnessResult:
    """The harness on a model already in memory (the trainer's, at a checkpoint, or a loaded
    one); the caller sets eval mode."""
    manager = task_manager(tasks, include_path)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    wrapped = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        device=str(device),
        batch_size=batch_size,
        max_length=max_length,
    )
    output = simple_evaluate(
        model=wrapped,
        tasks=tasks,
        task_manager=manager,
        num_fewshot=num_fewshot,
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,  # no bootstrap standard errors: they cost minutes on a CPU
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    result = HarnessResult(model=name)
    for task, values in output["results"].items():
        result.tasks[task] = {k: v for k, v in values.items() if k != "alias"}
    for task, counts in output.get("n-samples", {}).items():
        result.samples[task] = int(counts.get("effective", counts.get("original", 0)))
    return result


def run_harness(
    model: str,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    gguf_file: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    seed: int = 0,
) -> HarnessResult:
    """Load `model` the way the serving process does, then `evaluate_model`."""
    from .generation import load_for_generation

    task_manager(tasks, include_path)  # an unknown task fails before the model loads
    loaded = load_for_generation(model, gguf_file=gguf_file, device=device)
    return evaluate_model(
        loaded.model,
        loaded.tokenizer,
        loaded.device,
        tasks,
        name=model,
        include_path=include_path,
        max_length=loaded.context_length,
        batch_size=batch_size,
        limit=limit,
        num_fewshot=num_fewshot,
        seed=seed,
    )
