"""Train the byte-level BPE tokenizer bundled with ReplayFT's from-scratch presets.

    python scripts/train_tokenizer.py                       # writes replay_engine/assets/tokenizer/
    python scripts/train_tokenizer.py --out /tmp/tok --data-dir /path/to/shared/data

Design:
- Byte-level BPE (GPT-2 style): the ByteLevel pre-tokenizer maps every byte to a symbol, so any
  UTF-8 text encodes without unknown tokens and decodes back to the same string.
- Digits are split one per token before BPE (as Llama and SmolLM do), so numbers never eat vocab
  and arithmetic in GSM8K-style data is learned digit by digit.
- Training text: the generic-English pool (train/valid files only; the held-out test files are
  never read), a deterministic slice of the running interpreter's standard library so Python code
  tokenizes reasonably, and some GSM8K *train* problems so math notation gets merges.
- Special tokens come first, so their ids are fixed: <|endoftext|>=0 (eos and pad),
  <|im_start|>=1, <|im_end|>=2. replay_engine/models.py hard-codes these ids and the vocab size,
  and tests/test_models.py checks they still match the files written here.
- Deterministic: inputs are read in a fixed order and the BPE trainer breaks ties by token id, so
  rerunning (with the same Python version, whose stdlib is part of the input) rewrites the same
  files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "replay_engine" / "assets" / "tokenizer"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"  # the checkout's ../shared/data

EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|im_start|>", "<|im_end|>"]  # order fixes ids 0, 1, 2

# ChatML: one block per message, plus the assistant header when asking for a reply.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Generic English: (relative path, JSON field or None for plain text). No test splits.
ENGLISH_FILES = [
    ("c4_sample/c4_demo.jsonl", "text"),
    ("wikipedia_sample/wiki_demo.txt", None),
    ("ud_english_ewt/en_ewt-ud-train.txt", None),
    ("state_union/state_union.jsonl", "text"),
    ("wikitext2/valid.txt", None),
]
GSM8K_FILE = "gsm8k/train.jsonl"


# -----------------------------------------------------------------------------
# training text


def english_documents(data_dir: Path) -> Iterator[str]:
    for rel, field in ENGLISH_FILES:
        path = data_dir / rel
        if field is None:
            # Whole file as one document: the newline structure is part of what BPE should see.
            yield path.read_text(encoding="utf-8")
        else:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)[field]


def gsm8k_documents(data_dir: Path, n_records: int) -> Iterator[str]:
    with (data_dir / GSM8K_FILE).open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n_records:
                break
            record = json.loads(line)
            yield record["question"] + "\n" + record["answer"]


def stdlib_files(stride: int) -> list[Path]:
    """Every `stride`-th top-level stdlib module in name order: spread over the alphabet, so the
    sample mixes many coding styles instead of just the a-c modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"), key=lambda p: p.name)
    return files[::stride]


def code_documents(stride: int) -> Iterator[str]:
    for path in stdlib_files(stride):
        yield path.read_text(encoding="utf-8", errors="replace")


# -----------------------------------------------------------------------------
# tokenizer


def build_tokenizer(documents: Iterator[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets byte-exact (GPT-2's convention); adds no tokens.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols, even ones absent from the corpus: nothing is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer=trainer)
    return tok


def save_hf_folder(tok: Tokenizer, out: Path) -> None:
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,  # padding is masked out of the loss anyway; reusing eos needs no new id
        extra_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
    )
    # Start from an empty folder so files from an older layout never linger in the package.
    if out.exists():
        shutil.rmtree(out)
    hf_tok.save_pretrained(out)
    # save_pretrained pretty-prints tokenizer.json (~550 KB); the compact form loads the same
    # and is what we ship as package data (~230 KB).
    hf_tok.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="HF tokenizer folder to write"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="shared data root")
    parser.add_argument("--vocab-size", type=int, default=8192, help="including special tokens")
    parser.add_argument(
        "--stdlib-stride",
        type=int,
        default=3,
        help="use every n-th stdlib module (3: about 1.5 MB)",
    )
    parser.add_argument(
        "--gsm8k-records", type=int, default=1500, help="first n GSM8K train problems (0 disables)"
    )
    args = parser.parse_args()

    def documents() -> Iterator[str]:
        yield from english_documents(args.data_dir)
        yield from code_documents(args.stdlib_stride)
        yield from gsm8k_documents(args.data_dir, args.gsm8k_records)

    tok = build_tokenizer(documents(), args.vocab_size)
    save_hf_folder(tok, args.out)

    for path in sorted(args.out.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path.name:28s} {path.stat().st_size:>9,d} B  sha256 {digest}")
    print(
        f"vocab size {tok.get_vocab_size()}, special ids",
        [tok.token_to_id(t) for t in SPECIAL_TOKENS],
    )


if __name__ == "__main__":
    main()
