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

import math
from dataclasses import dataclass, field
from pathlib import Path


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
                if "stderr" in name or not isinstance(value, int | float) or math.isnan(value):
                    continue
                flat[f"harness/{task}/{name}"] = float(value)
        return flat


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
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:  # the extra is not installed
        raise HarnessMissing(
            "replayft eval needs EleutherAI's lm-eval: pip install 'replayft[evals]'"
        ) from e

    from .generation import load_for_generation

    loaded = load_for_generation(model, gguf_file=gguf_file, device=device)
    wrapped = HFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        device=str(loaded.device),
        batch_size=batch_size,
        max_length=loaded.context_length,
    )
    manager = None
    if include_path:  # indexing the harness's own thousands of task files takes a while
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(
            f"unknown task(s) {', '.join(unknown)}: give a registered lm-eval task or a task "
            "YAML under --include-path"
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
    result = HarnessResult(model=model)
    for task, values in output["results"].items():
        result.tasks[task] = {k: v for k, v in values.items() if k != "alias"}
    for task, counts in output.get("n-samples", {}).items():
        result.samples[task] = int(counts.get("effective", counts.get("original", 0)))
    return result
