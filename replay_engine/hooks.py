"""Hooks: how a caller watches and steers a training run without the engine knowing who it is.

The CLI implements them with a progress bar; the Celery worker implements them with database
writes and a cancel/pause flag. The engine calls them synchronously on the training thread, so an
implementation should be quick (batch its writes) and must not raise unless it means to end the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class TrainingHooks(Protocol):
    def on_metrics(self, record: dict[str, Any]) -> None:
        """A metrics record: per step (train_loss, lr, ...), per eval (val_loss_*), or the summary."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """A complete checkpoint now exists at `path`."""

    def should_stop(self, step: int) -> bool:
        """Asked after every step; True checkpoints the run and returns (cancel or pause)."""


class NoHooks:
    """The do-nothing default."""

    def on_metrics(self, record: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, path: Path, step: int) -> None:
        pass

    def should_stop(self, step: int) -> bool:
        return False
