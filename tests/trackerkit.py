"""Reading back what the experiment trackers wrote, with the libraries' own readers."""

from __future__ import annotations

import struct
import time
from pathlib import Path


def wandb_records(run_dir: Path, timeout: float = 30) -> list:
    """The records of an offline run's transaction log (`run-<id>.wandb`), once it holds the
    run's header and its exit record: W&B's own service process writes the file, and on a busy
    machine may still be writing when the run's `finish()` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_log(run_dir)
        kinds = {r.WhichOneof("record_type") for r in records}
        if {"run", "exit"} <= kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_log(run_dir: Path) -> list:
    """LevelDB's log format (32 KiB blocks of chunks: crc32, length, type) after W&B's 7-byte
    header, each record a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind == 2 else pending + chunk  # 2: first chunk, 3: middle, 4: last
        if kind in (1, 4):  # 1: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }
