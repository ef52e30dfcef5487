"""Checkpoints: self-contained, atomically written step folders.

Layout of `OUT/checkpoints/step-N/` (N = optimizer steps completed):
  config.json, model.safetensors, ...   Hugging Face `save_pretrained` output: loadable as is by
                                        AutoModelForCausalLM.from_pretrained, or as `model` of a new job
  tokenizer files                        so the folder is usable without the base model
  optimizer.pt                           AdamW state (tensors and plain numbers only)
  rng.pt                                 torch RNG states
  meta.json                              step, spec, plan, loop state (readable; written last)

A LoRA run with `export: adapter` writes adapter_config.json + adapter_model.safetensors in place
of config.json and the weights; meta.json's spec then names the base (models.load_merged).

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
`step-N` is always complete; a crash mid-write leaves only a `.tmp-*` folder, which is ignored and
cleaned up. Nothing here unpickles arbitrary objects: weights are safetensors and the rest is
loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .spec import upgrade_spec_data

FORMAT_VERSION = 1
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    model_state: dict[str, Any] | None = None,
    write_model: Callable[[Path], None] | None = None,
) -> Path:
    """Write `checkpoints/step-<step>/` atomically. `optimizer_state` and `model_state`, when
    given, replace `optimizer.state_dict()` and the model's own weights (a sharded run passes the
    full state it gathered; see distributed.full_state). `write_model(folder)` replaces the
    model's save_pretrained (LoRA writes merged weights and/or an adapter, see lora.py)."""
    root = checkpoints_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    if write_model is not None:
        write_model(tmp)
    else:
        model.save_pretrained(tmp, state_dict=model_state)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer_state or optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / RNG_FILE)
    meta = {"format_version": FORMAT_VERSION, "step": step, **meta}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))

    _fsync_tree(tmp)
    if final.exists():  # a rerun reached the same step again: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / META_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def clean_partial(out_dir: str | Path) -> None:
    """Remove temporary folders left by a checkpoint write that was killed."""
    root = checkpoints_root(out_dir)
    if root.is_dir():
        for path in root.glob(".tmp-step-*"):
            shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(out_dir: str | Path, keep: int, protect: Path | None = None) -> None:
    """Keep the newest `keep` checkpoints (and `protect`); delete the older ones."""
    found = list_checkpoints(out_dir)
    for _, path in found[: max(0, len(found) - keep)]:
        if protect is None or path.resolve() != protect.resolve():
            shutil.rmtree(path, ignore_errors=True)


def read_meta(path: str | Path) -> dict[str, Any]:
    meta = json.loads((Path(path) / META_FILE).read_text())
    return upgrade_meta(meta)


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The one place where older checkpoint formats are brought up to date."""
    version = meta.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format {version} is newer than this ReplayFT understands ({FORMAT_VERSION})"
        )
    if isinstance(meta.get("spec"), dict):
        meta["spec"] = upgrade_spec_data(meta["spec"])  # spec fields added since
    return meta


def load_optimizer_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / OPTIMIZER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds no optimizer state ({OPTIMIZER_FILE})")
    return torch.load(file, map_location="cpu", weights_only=True)


def restore_rng(path: str | Path) -> None:
    rng = torch.load(Path(path) / RNG_FILE, map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def is_replayft_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / META_FILE).is_file() and (path / OPTIMIZER_FILE).is_file()


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
