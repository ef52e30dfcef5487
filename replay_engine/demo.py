"""Demo data that exists on any machine with Python, so a replay run needs no downloads.

- target (scarce, "code"): source files of the standard library, one document per file
- generic ("English"): the interpreter's bundled help topics (pydoc_data.topics), one per topic

`write_demo` writes both as JSONL text plus a two-stage spec: stage 1 trains a from-scratch tiny
model on English; stage 2 trains on code with a quarter of each batch replaying English.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import yaml

from .spec import apply_overrides

# Plain, self-contained modules: deterministic across installs of the same Python version.
_TARGET_MODULES = [
    "bisect.py",
    "heapq.py",
    "fnmatch.py",
    "colorsys.py",
    "textwrap.py",
    "shlex.py",
    "glob.py",
    "queue.py",
    "sched.py",
    "graphlib.py",
    "statistics.py",
    "fractions.py",
    "string.py",
    "keyword.py",
    "reprlib.py",
    "difflib.py",
    "calendar.py",
    "pprint.py",
    "copy.py",
    "abc.py",
]


def demo_documents() -> tuple[list[str], list[str]]:
    """(code documents, English documents)."""
    from pydoc_data import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [
        (stdlib / name).read_text(encoding="utf-8")
        for name in _TARGET_MODULES
        if (stdlib / name).exists()
    ]
    english = [topics.topics[key] for key in sorted(topics.topics)]
    return code, english


def write_demo(out: Path, steps_scale: float = 1.0, overrides: Sequence[str] = ()) -> Path:
    """Write the demo data and its spec (with `overrides`, FIELD=VALUE, applied) to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    code, english = demo_documents()
    n_code = max(4, int(len(code) * min(1.0, steps_scale)))
    for name, docs in (("code.jsonl", code[:n_code]), ("english.jsonl", english)):
        with open(out / name, "w") as f:
            for doc in docs:
                f.write(json.dumps({"text": doc}) + "\n")
    spec = {
        "model": "replayft/llama-tiny",
        "training_file": "code.jsonl",
        "replay": {
            "dataset": "english.jsonl",
            "fraction": 0.25,
            "target_stage2_allocation": 1.0,
            "stage2_duration": 0.5,
        },
        "n_epochs": 2,
        "batch_size": 8,
        "seq_len": 256,
        "learning_rate": 3e-3,
        "lr_scheduler": {"type": "wsd", "warmup_ratio": 0.01, "decay_ratio": 0.1},
        "eval_sequences": 16,  # a small held-out slice keeps evals cheap next to the steps
        "seed": 0,
    }
    spec = apply_overrides(spec, overrides)
    path = out / "spec.yaml"
    header = f"# ReplayFT demo: replayft train {path} --out {out / 'run'}\n"
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return path
