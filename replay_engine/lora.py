"""LoRA and QLoRA through peft: train low-rank adapters on a frozen base model.

`method: {type: lora, lora: {r, alpha, dropout, target_modules}, export: merged | adapter}`.
Full fine-tuning (`type: full`) stays the default and never touches this module.

Design
- The base always comes from the spec's `model` (fresh, or on resume too): a checkpoint stores
  only what training changed, the adapter, plus the optimizer state of the adapter's parameters
  (the only ones the optimizer holds), so resume = base from the spec + adapter from the folder.
- Export. `adapter`: the checkpoint folder *is* a peft adapter folder (adapter_config.json,
  adapter_model.safetensors); load it with `PeftModel.from_pretrained(base, folder)`. It is also
  a base in its own right: as the `model` of a next job (or of `models.load_model`) it loads as
  the run's base with the adapter merged in (`models.load_merged`), the base being named by the spec in
  the checkpoint's meta.json; a base that is itself a checkpoint loads the same way, recursively.
  `merged` (the default): the folder is a plain Hugging Face model with W + (alpha/r) B A folded
  into each adapted weight, loadable by `AutoModelForCausalLM.from_pretrained` and usable as the
  `model` of a next job, with the adapter kept in `adapter/` for resuming. Merging is computed
  into a new state dict (peft's `get_delta_weight`), so the training weights are never rounded by
  a merge/unmerge round trip.
- QLoRA loads the base in 4-bit NF4 (bitsandbytes, CUDA only) and trains bf16 adapters; it is
  refused with a clear error where CUDA or bitsandbytes is missing, and exports adapters only
  (a merge would need the de-quantized base). Such an adapter used as a base is merged into the
  full-precision base, not the 4-bit one it was trained against (the usual QLoRA deployment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .spec import JobSpec, SpecError

ADAPTER_DIR = "adapter"  # inside a merged-export checkpoint


def adapter_folder(checkpoint: Path, spec: JobSpec) -> Path:
    return checkpoint if spec.method.export == "adapter" else checkpoint / ADAPTER_DIR


def _adaptable(module: torch.nn.Module) -> bool:
    """Layer types peft's LoRA can wrap (a match on anything else fails when peft builds it)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    return isinstance(module, kinds)


def check_target_modules(model: torch.nn.Module, target_modules: list[str]) -> None:
    """SpecError unless each `target_modules` entry names layers of `model` that LoRA can adapt,
    matched as peft matches them: a module's full name, or its last dotted parts (`q_proj`,
    `self_attn.q_proj`). `model` may live on the meta device: only names and types are read.
    Checked before a job is queued, since peft would fail only once the weights are loaded."""
    modules = list(model.named_modules())
    bad = []
    for entry in target_modules:
        hits = [m for name, m in modules if name == entry or name.endswith("." + entry)]
        if not hits or not all(map(_adaptable, hits)):
            bad.append(entry)
    if bad:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in modules if name and _adaptable(m)})
        noun = "names no layer" if len(bad) == 1 else "name no layers"
        raise SpecError(
            [
                (
                    "method.lora.target_modules",
                    f"{', '.join(map(repr, bad))} {noun} that LoRA can adapt in this model "
                    f"(its adaptable layers: {', '.join(names)}; or use all-linear)",
                )
            ]
        )


def build_model(spec: JobSpec, base: torch.nn.Module, resume: Path | None) -> torch.nn.Module:
    """`base` (frozen, from `models.load_base`) with trainable adapters: fresh, or the
    checkpoint's on resume."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if resume is not None:
        return PeftModel.from_pretrained(base, adapter_folder(resume, spec), is_trainable=True)
    lora = spec.method.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):  # adapter init depends on the seed only
        torch.manual_seed(spec.seed)
        return get_peft_model(base, config)


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded in, under the base's own names."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    out = {
        key.replace(".base_layer.", "."): value.detach()
        for key, value in base.state_dict().items()
        if "lora_" not in key
    }
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                key = f"{name}.weight"
                out[key] = out[key] + module.get_delta_weight(adapter).to(out[key].dtype)
    return out


def write_checkpoint_weights(model: Any, folder: Path, spec: JobSpec) -> None:
    """The model part of a LoRA checkpoint (see the module docstring for the layout)."""
    if spec.method.export == "adapter":
        model.save_pretrained(folder)
        return
    model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model))
    model.save_pretrained(folder / ADAPTER_DIR)
