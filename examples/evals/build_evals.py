"""Rebuild the example eval sets (and the GSM8K training file) from the data sets beside the
checkout (../shared/data; see its README). Deterministic: the same data give the same files.

    python examples/evals/build_evals.py                 # writes the three files next to it
    python examples/evals/build_evals.py --data DIR --out DIR

- gsm8k-test-50.jsonl    generation: the first 50 GSM8K *test* problems, prompted as the
                         training file below is ("Question: ...\\nAnswer:"), reference "#### N";
                         score with `scorer: numeric`.
- ewt-next-sentence.jsonl  multiple_choice, generic English: 80 paragraphs of the held-out UD
                         English-EWT test text; the context is up to three sentences, the choices
                         the true next sentence and three sentences of other paragraphs of a
                         similar length, in a seeded order.
- gsm8k-train-400.jsonl  the first 400 GSM8K *train* problems as prompt/completion (the
                         engine's format), the target data of examples/finetune-gsm8k.yaml.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data"
SEED = 0
GSM8K_EVAL, GSM8K_TRAIN, NEXT_SENTENCE = 50, 400, 80
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


def gsm8k_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def gsm8k_rows(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def gsm8k_eval(data: Path) -> list[dict]:
    rows = gsm8k_rows(data / "gsm8k" / "test.jsonl", GSM8K_EVAL)
    return [
        {
            "prompt": gsm8k_prompt(row["question"]),
            "reference": "#### " + row["answer"].rsplit("####", 1)[1].strip(),
        }
        for row in rows
    ]


def gsm8k_train(data: Path) -> list[dict]:
    rows = gsm8k_rows(data / "gsm8k" / "train.jsonl", GSM8K_TRAIN)
    return [{"prompt": gsm8k_prompt(r["question"]), "completion": " " + r["answer"]} for r in rows]


def paragraphs(path: Path) -> list[list[str]]:
    """Blank-line separated paragraphs, each split into sentences."""
    out = []
    for block in re.split(r"\n\s*\n", path.read_text()):
        text = " ".join(block.split())
        sentences = [s for s in _SENTENCE_END.split(text) if s]
        if sentences:
            out.append(sentences)
    return out


def next_sentence(data: Path) -> list[dict]:
    rng = random.Random(SEED)
    paras = paragraphs(data / "ud_english_ewt" / "en_ewt-ud-test.txt")
    pool = [(p, s) for p, sentences in enumerate(paras) for s in sentences if len(s) >= 20]
    records = []
    for p, sentences in enumerate(paras):
        if len(records) == NEXT_SENTENCE:
            break
        if len(sentences) < 3:
            continue
        i = rng.randrange(1, len(sentences) - 1)  # the context's last sentence
        answer = sentences[i + 1]
        if len(answer) < 20:
            continue
        similar = [s for q, s in pool if q != p and 0.5 * len(answer) <= len(s) <= 2 * len(answer)]
        if len(similar) < 3:
            continue
        choices = [answer, *rng.sample(similar, 3)]
        rng.shuffle(choices)
        records.append(
            {
                "context": " ".join(sentences[max(0, i - 2) : i + 1]),
                "choices": [" " + c for c in choices],  # as they continue the context
                "label": choices.index(answer),
            }
        )
    return records


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(records)} records to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    write(args.out / "gsm8k-test-50.jsonl", gsm8k_eval(args.data))
    write(args.out / "ewt-next-sentence.jsonl", next_sentence(args.data))
    write(args.out / "gsm8k-train-400.jsonl", gsm8k_train(args.data))


if __name__ == "__main__":
    main()
