"""Models and tokenizers: turn the spec's `model` string into a tokenizer and fp32 weights.

A `model` string is one of five things, checked in this order:

1. A preset, `replayft/llama-{tiny,small,base}`: a Llama architecture built from scratch
   (`PRESETS` holds the `LlamaConfig` kwargs) with the byte-level BPE tokenizer bundled in
   `replay_engine/assets/tokenizer/` (written by `scripts/train_tokenizer.py`). Initialisation
   is a pure function of the seed, so two runs with the same spec start from the same weights.
2. A local path: a Hugging Face folder (`save_pretrained` output; a full or merged-LoRA ReplayFT
   checkpoint is exactly that plus the tokenizer, so it resumes and fine-tunes through this path), or a `.gguf`
   file (or a folder plus `gguf_file`), which transformers de-quantises to plain fp32 weights.
3. A ReplayFT adapter-only checkpoint (LoRA with `export: adapter`: adapter_config.json, no
   config.json): its meta.json names the run's base, which is loaded (recursively, so the base may
   itself be a checkpoint) with the adapter folded in; see load_merged.
4. A Hugging Face hub id (`org/name`, optionally with `gguf_file`), downloaded by transformers.
5. Anything else is an error that says what was expected.

Everything loads as fp32 "master" weights on the requested device; the trainer autocasts to bf16
on GPU. Attention is always SDPA so the same code runs on CPU and uses flash kernels on GPU.
Every failure the user can fix (unknown preset, missing path, unreachable hub, slow tokenizer, no
eos token) is a ValueError with a message saying what to do.

Targets transformers 5 (`dtype=` keyword, `TokenizersBackend` tokenizers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from .checkpoint import META_FILE, read_meta
from .spec import JobSpec, SpecError

# -----------------------------------------------------------------------------
# presets

# The bundled tokenizer's layout (fixed by the special-token order in scripts/train_tokenizer.py;
# tests/test_models.py checks these against the files). Hard-coded so that building a preset
# config never has to read the tokenizer.
VOCAB_SIZE = 8192
# <|endoftext|> ends documents and also serves as pad and bos (GPT-2 style; the tokenizer itself
# never adds a bos token).
EOS_ID = 0

_LLAMA_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    bos_token_id=EOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=EOS_ID,
    tie_word_embeddings=True,  # at vocab 8192 the untied head would be 1-6M params of little use
    hidden_act="silu",
    rms_norm_eps=1e-5,
    initializer_range=0.02,
    attention_bias=False,
    mlp_bias=False,
)

# Head dim is 32 or 64 everywhere: sizes SDPA's flash and memory-efficient kernels accept.
PRESETS: dict[str, dict[str, Any]] = {
    # ~1.9M params: for tests and CPU smoke runs.
    "replayft/llama-tiny": dict(
        _LLAMA_COMMON,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    ),
    # ~28M params: small pre-train + replay experiments on one GPU.
    "replayft/llama-small": dict(
        _LLAMA_COMMON,
        hidden_size=512,
        intermediate_size=1280,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
    ),
    # ~120M params: GPT-2-small shape (768 wide, 12 layers, 12 heads) with a Llama block; the
    # "~125M Llama-style model" of the GPU benchmarks.
    "replayft/llama-base": dict(
        _LLAMA_COMMON,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=2048,
    ),
}
PRESET_PREFIX = "replayft/"


def is_preset(name: str) -> bool:
    return name in PRESETS


# a small real model to point newcomers to: the presets start from random weights
PRETRAINED_EXAMPLE = "HuggingFaceTB/SmolLM2-135M"


def preset_description(name: str) -> str:
    """What a preset is, for people choosing a model: above all, that it is not pretrained."""
    config = PRESETS[name]
    with torch.device("meta"):
        params = count_parameters(LlamaForCausalLM(LlamaConfig(**config)))
    return (
        f"Randomly initialised Llama ({config['num_hidden_layers']} layers x "
        f"{config['hidden_size']}, {params / 1e6:.1f}M parameters, ReplayFT's bundled "
        f"{VOCAB_SIZE}-token tokenizer), not pretrained: for plumbing, tests and from-scratch "
        f"experiments. To fine-tune for real, start from a pretrained model, e.g. "
        f"{PRETRAINED_EXAMPLE} (an admin registers its folder with `replayft models add`)."
    )


def bundled_tokenizer_path() -> Path:
    """The tokenizer folder shipped inside the package (no network, no shared data needed)."""
    return Path(__file__).resolve().parent / "assets" / "tokenizer"


# -----------------------------------------------------------------------------
# resolving a model string


# Hub ids: "name" or "org/name", word characters, '-' and '.', at most 96 characters (hub rules).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_hub_id(name: str) -> bool:
    return len(name) <= 96 and bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name


def split_gguf(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """transformers wants a GGUF checkpoint as (folder or hub id, file name inside it).

    "dir/x.gguf" -> ("dir", "x.gguf"); "org/repo/x.gguf" -> ("org/repo", "x.gguf") for the hub;
    anything else is returned unchanged.
    """
    if not model.lower().endswith(".gguf"):
        return model, gguf_file
    if gguf_file is not None:
        raise ValueError(
            f"model {model!r} is already a .gguf file; give either a .gguf path as `model`, "
            f"or a folder / hub id as `model` plus the file name as `gguf_file`, not both"
        )
    path = Path(model)
    return str(path.parent), path.name


def _presets_hint() -> str:
    return "presets: " + ", ".join(PRESETS)


def is_adapter_folder(path: str | Path) -> bool:
    """A peft adapter folder rather than a model: adapter_config.json and no config.json."""
    folder = Path(path)
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def _resolve(model: str, gguf_file: str | None) -> tuple[str, str, str | None, bool]:
    """-> (kind, path or hub id, gguf file name, from_hub). Checks everything that can be checked
    without loading, so bad input fails fast with a message instead of deep inside transformers."""
    model = str(model)  # tolerate pathlib.Path
    if is_preset(model):
        if gguf_file is not None:
            raise ValueError(f"{model!r} is a preset; it takes no gguf_file")
        return "preset", model, None, False

    target, gguf_file = split_gguf(model, gguf_file)
    kind = "gguf" if gguf_file is not None else "huggingface"
    local = Path(target).expanduser()

    if local.exists():
        if local.is_file():
            raise ValueError(
                f"model {model!r} is a file; expected a Hugging Face model folder "
                f"(with config.json), a .gguf file, or a preset ({_presets_hint()})"
            )
        if gguf_file is not None and not (local / gguf_file).is_file():
            raise ValueError(f"GGUF file {gguf_file!r} not found in folder {str(local)!r}")
        if gguf_file is None and is_adapter_folder(local):
            return "adapter", str(local), None, False
        return kind, str(local), gguf_file, False

    # A name in our namespace that is not a preset is a typo, not a hub id.
    if model.startswith(PRESET_PREFIX):
        raise ValueError(f"unknown preset {model!r}; {_presets_hint()}")
    # "dir/x.gguf" with no such dir is a mistyped path; on the hub a GGUF lives in "org/repo".
    gguf_path_without_org = target != model and "/" not in target
    if not _looks_like_hub_id(target) or gguf_path_without_org:
        raise ValueError(
            f"model path {model!r} does not exist, and it is not a preset or a Hugging Face hub id "
            f"('org/name'). Give an existing local folder or .gguf file, or a preset "
            f"({_presets_hint()})"
        )
    return kind, target, gguf_file, True


def _check_model_folder(path: str, gguf_file: str | None) -> None:
    """A local folder for a model must hold config.json unless a GGUF file carries the config."""
    folder = Path(path)
    if gguf_file is None and not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = f"; it holds {ggufs}: pass gguf_file= one of them" if ggufs else ""
        raise ValueError(
            f"folder {path!r} has no config.json, so it is not a Hugging Face model folder "
            f"(save_pretrained output or ReplayFT checkpoint){hint}"
        )


def _from_pretrained(loader: Any, target: str, from_hub: bool, **kwargs: Any) -> Any:
    """`loader.from_pretrained`, with transformers' OSErrors turned into actionable ValueErrors."""
    try:
        return loader.from_pretrained(target, **kwargs)
    except OSError as err:
        if from_hub:
            raise ValueError(
                f"could not load {target!r} from the Hugging Face hub: the hub could not be "
                f"reached or has no such repository/file ({err}). If you meant a local folder, it "
                f"does not exist; otherwise download the model on a machine with access and pass "
                f"its local folder or .gguf path"
            ) from err
        raise ValueError(f"could not load {target!r}: {err}") from err


# -----------------------------------------------------------------------------
# tokenizer


def _has_tokenizer_files(folder: str) -> bool:
    return any(
        (Path(folder) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )


def load_tokenizer(model: str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer for `model`: the bundled one for presets, else the checkpoint's own (an
    adapter-only checkpoint without tokenizer files falls back to its base's).

    It must be a fast (Rust `tokenizers`) tokenizer, because tokenizing whole data sets relies on
    its batch speed, and must have an eos token, which separates packed documents. A missing pad token
    is set to eos (padding is masked out of the loss, so it needs no id of its own).
    """
    kind, target, gguf_file, from_hub = _resolve(model, gguf_file)
    if kind == "adapter" and not _has_tokenizer_files(target):
        base, base_gguf, _ = adapter_base(target)
        return load_tokenizer(base, base_gguf)
    if kind == "preset":
        tok = PreTrainedTokenizerFast.from_pretrained(bundled_tokenizer_path())
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
        tok = _from_pretrained(AutoTokenizer, target, from_hub, **kwargs)

    if not tok.is_fast:
        raise ValueError(
            f"the tokenizer of {model!r} is a slow (pure Python) tokenizer ({type(tok).__name__}); "
            f"ReplayFT needs a fast one: add a tokenizer.json to the folder"
        )
    if tok.eos_token is None:
        raise ValueError(
            f"the tokenizer of {model!r} has no eos token; ReplayFT needs one to separate "
            f"documents: set eos_token in its tokenizer_config.json"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# -----------------------------------------------------------------------------
# model


def _build_preset(name: str, *, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised preset model on CPU, in fp32.

    Built on CPU under its own seeded RNG: the weights depend only on (name, seed), not on the
    device or on what the caller did with the global RNG, which is left untouched.
    """
    if not is_preset(name):
        raise ValueError(f"unknown preset {name!r}; {_presets_hint()}")
    config = LlamaConfig(**PRESETS[name], attn_implementation="sdpa")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32)


def load_model(
    model: str,
    *,
    gguf_file: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """fp32 causal LM for `model` on `device`, in eval mode (as `from_pretrained` returns it; the
    trainer switches to train mode). `seed` only matters for presets (an adapter-only checkpoint's
    base uses the seed of the run that trained it)."""
    kind, target, gguf_file, from_hub = _resolve(model, gguf_file)
    if kind == "preset":
        net = _build_preset(target, seed=seed).eval()
    elif kind == "adapter":
        net = load_merged(target, device=device)
    else:
        if not from_hub:
            _check_model_folder(target, gguf_file)
        kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
        # dtype must be explicit: transformers 5 defaults to "auto" (the checkpoint's dtype,
        # often bf16), but the optimizer needs fp32 master weights.
        net = _from_pretrained(
            AutoModelForCausalLM,
            target,
            from_hub,
            dtype=torch.float32,
            attn_implementation="sdpa",
            **kwargs,
        )
        quantizer = getattr(net, "hf_quantizer", None)
        if gguf_file is not None and quantizer is not None:
            # transformers marks GGUF models as quantized even though the weights are now plain
            # fp32, and then refuses save_pretrained (and Trainer refuses to train them);
            # the quantizer's own cleanup drops the marker, its config and is_quantized
            quantizer.remove_quantization_config(net)
    return net.to(device)


def build_on_meta(model: str, *, gguf_file: str | None = None) -> PreTrainedModel:
    """`model`'s architecture with no weights (meta device), in fp32: what the FSDP ranks other
    than 0 build, to be filled from rank 0 after sharding (distributed.fill_from_rank0)."""
    kind, target, gguf_file, from_hub = _resolve(model, gguf_file)
    if kind == "preset":
        config = LlamaConfig(**PRESETS[target], attn_implementation="sdpa")
        with torch.device("meta"):
            return LlamaForCausalLM(config).to(torch.float32)
    if kind == "adapter":  # merging the adapter leaves the base's architecture unchanged
        base, base_gguf, _ = adapter_base(target)
        return build_on_meta(base, gguf_file=base_gguf)
    kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
    config = _from_pretrained(AutoConfig, target, from_hub, **kwargs)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return net.to(torch.float32)


# Different architectures name the context length differently; first match wins.
_CONTEXT_LENGTH_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def _config_max_positions(config: PretrainedConfig) -> int | None:
    for attr in _CONTEXT_LENGTH_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def max_sequence_length(model: PreTrainedModel) -> int | None:
    """Longest sequence the model's position embeddings cover; None if the config does not say."""
    return _config_max_positions(model.config)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once; works on the meta device too)."""
    return sum(p.numel() for p in model.parameters())


def model_info(model: str, gguf_file: str | None = None) -> dict[str, Any]:
    """Cheap facts for validating a spec before a run: reads only the config, never the weights.

    Returns {"name", "kind" ("preset" | "gguf" | "huggingface" | "adapter"), "max_sequence_length",
    "vocab_size"}; vocab_size is the embedding table size, which can exceed len(tokenizer).
    For GGUF the config is parsed out of the file's metadata, which takes a few seconds. An
    adapter-only checkpoint reports its base's numbers.
    """
    kind, target, gguf_file, from_hub = _resolve(model, gguf_file)
    if kind == "adapter":
        base, base_gguf, _ = adapter_base(target)
        return {**model_info(base, base_gguf), "name": model, "kind": kind}
    if kind == "preset":
        config = LlamaConfig(**PRESETS[target])
    else:
        if not from_hub:
            _check_model_folder(target, gguf_file)
        kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
        config = _from_pretrained(AutoConfig, target, from_hub, **kwargs)
    return {
        "name": model,
        "kind": kind,
        "max_sequence_length": _config_max_positions(config),
        "vocab_size": getattr(config, "vocab_size", None),
    }


# -----------------------------------------------------------------------------
# adapter-only checkpoints as bases, and the bases LoRA trains on


def adapter_base(folder: str | Path) -> tuple[str, str | None, int]:
    """(model, gguf_file, seed) of the run that wrote the adapter-only checkpoint `folder`: the
    base its adapter was trained on (presets are initialised from the seed)."""
    try:
        spec = read_meta(folder)["spec"]
        model, gguf_file, seed = spec["model"], spec.get("gguf_file"), spec.get("seed", 0)
        if not isinstance(model, str) or not isinstance(seed, int):
            raise ValueError("its spec has no model name or seed")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"model {str(folder)!r} is a peft adapter folder without readable ReplayFT metadata "
            f"({META_FILE}: {err}), so its base model is unknown. Give as `model` a ReplayFT "
            f"checkpoint, or a full model folder (for an adapter from elsewhere: merge it into its "
            f"base with peft's merge_and_unload and save_pretrained)"
        ) from None
    return model, gguf_file, seed


def load_merged(folder: str | Path, device: str | torch.device = "cpu") -> Any:
    """The adapter-only checkpoint `folder` as a plain model: its base with the adapter folded
    in, fp32, in eval mode, every weight trainable (it may be fully fine-tuned next)."""
    from peft import PeftModel

    model, gguf_file, seed = adapter_base(folder)
    base = load_model(model, gguf_file=gguf_file, seed=seed, device=device)
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    # peft froze the base's weights when it wrapped them; merging does not thaw them
    return merged.requires_grad_(True).eval()


def _check_qlora(spec: JobSpec) -> None:
    if not torch.cuda.is_available():
        raise SpecError([("method.type", "qlora needs a CUDA GPU; use lora on this machine")])
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SpecError(
            [("method.type", "qlora needs the bitsandbytes package (pip install bitsandbytes)")]
        ) from None


def _load_quantized(spec: JobSpec, device: torch.device) -> torch.nn.Module:
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = spec.model
    if is_preset(model) or spec.gguf_file or model.lower().endswith(".gguf"):
        raise SpecError(
            [("method.type", "qlora needs a Hugging Face model folder or hub id as model")]
        )
    if is_adapter_folder(model):  # 4-bit loading goes through from_pretrained, which needs weights
        raise SpecError(
            [
                (
                    "method.type",
                    f"qlora needs a full model as base; {model} is an adapter-only checkpoint "
                    f"(use lora, or a checkpoint exported with export: merged)",
                )
            ]
        )
    target, _ = split_gguf(model, None)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    base = AutoModelForCausalLM.from_pretrained(
        target, quantization_config=quant, attn_implementation="sdpa", device_map={"": device}
    )
    return prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)


def load_base(spec: JobSpec, device: torch.device) -> torch.nn.Module:
    """The frozen base a LoRA or QLoRA run trains its adapters on: `model` in fp32, or in 4-bit
    NF4 for QLoRA (CUDA and bitsandbytes only, refused with a readable error elsewhere)."""
    if spec.method.type == "qlora":
        _check_qlora(spec)
        return _load_quantized(spec, device)
    return load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed, device=device)
