"""Text generation from a model string: what the model-serving process runs.

    loaded = load_for_generation("replayft/llama-tiny")   # or a checkpoint folder, a base model
    ids = encode_chat(loaded, [{"role": "user", "content": "Hi"}])
    [choice] = generate(loaded, ids, SamplingParams(max_tokens=20, temperature=0))

A model string is whatever models.load_model takes (a preset, a Hugging Face folder such as a
ReplayFT checkpoint, an adapter-only checkpoint, a .gguf file). Chat prompts are rendered exactly
as training renders chat data (data.render_generation_prompt): the tokenizer's chat template, so
the presets get the ChatML template their bundled tokenizer carries, and a tokenizer without one
gets the plain "User: ...\\n\\nAssistant:" rendering, which then also stops at the next "User:".

`generate_batch` runs several requests, each with n choices, as one left-padded batch through
transformers' `generate` (KV cache, greedy search) with two hooks of our own:

- a logits processor that picks every row's next token itself, so each row has its own
  temperature, top_p and seeded torch.Generator (a seed gives the same text whatever else is in
  the batch, up to float noise from padding), records log-probabilities, and hands `generate`
  a distribution with one finite entry for its argmax to take;
- a stopping criterion, called after every token, that turns each row's tokens into text
  increments (holding back text that may be the start of a stop sequence or an incomplete
  character), stops a row on a stop token, a stop sequence, its own max_tokens, or its
  request's cancel flag, and hands the increments to the request's `emit` callback.

Log-probabilities are those of the model's own distribution (log-softmax of the logits,
before temperature and top_p), as OpenAI and vLLM report them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria

from .data import PLAIN_CHAT_STOP, render_generation_prompt
from .models import load_model, load_tokenizer, max_sequence_length

# Special tokens that end a turn in common chat templates; one that the tokenizer knows and its
# template uses stops generation like the eos token (the presets' ChatML ends turns with
# <|im_end|>, while their eos is <|endoftext|>).
TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
MAX_TOP_LOGPROBS = 20


@dataclass
class LoadedModel:
    name: str
    model: Any  # a transformers causal LM in eval mode
    tokenizer: Any
    device: torch.device
    context_length: int | None  # prompt + completion tokens the model's positions cover
    stop_token_ids: list[int]
    chat_stop: tuple[str, ...]  # stop sequences every chat completion gets
    memory_bytes: int
    generation_config: Any = None  # passed to every generate call (see for_model)


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_for_generation(
    name: str,
    *,
    gguf_file: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Model and tokenizer of `name` for inference: bf16 on GPU, fp32 on CPU unless `dtype`."""
    device = pick_device(str(device) if device is not None else None)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    tokenizer = load_tokenizer(name, gguf_file)
    # an adapter-only checkpoint comes back merged into its base
    model = load_model(name, gguf_file=gguf_file, device=device).to(dtype)
    model.eval().requires_grad_(False)
    loaded = for_model(name, model, tokenizer, device)
    # a plain config: no sampling, penalty or length settings of a checkpoint's
    # generation_config.json may act behind the request's back
    model.generation_config = loaded.generation_config
    return loaded


def for_model(name: str, model: Any, tokenizer: Any, device: torch.device) -> LoadedModel:
    """A model already in memory (the trainer's, for evals) ready for `generate_batch`, without
    changing it: the plain generation config travels in the LoadedModel, not on the model,
    so a checkpoint saved afterwards keeps its own."""
    stop_ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    stop_ids.update(configured if isinstance(configured, list) else [configured])
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    stop_ids.update(vocab[t] for t in TURN_END_TOKENS if t in vocab and t in str(template))
    stop_ids.discard(None)
    config = GenerationConfig(
        eos_token_id=sorted(stop_ids),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=getattr(model.config, "bos_token_id", None),
    )
    context = max_sequence_length(model)
    memory = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        context_length=context,
        stop_token_ids=sorted(stop_ids),
        chat_stop=() if template else (PLAIN_CHAT_STOP,),
        memory_bytes=memory,
        generation_config=config,
    )


def encode_text(loaded: LoadedModel, prompt: str) -> list[int]:
    """A completion prompt's token ids (with the tokenizer's own bos, if it adds one)."""
    return loaded.tokenizer(prompt, add_special_tokens=True)["input_ids"]


def encode_chat(loaded: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    """A conversation's token ids: rendered as training renders chat data; the template writes any
    bos itself, and its markers (<|im_start|>...) are parsed as the special tokens they are."""
    text = render_generation_prompt(messages, loaded.tokenizer)
    plain = bool(loaded.chat_stop)  # no template: ordinary text, bos added as for any text
    return loaded.tokenizer(text, add_special_tokens=plain)["input_ids"]


# -----------------------------------------------------------------------------
# requests and their output


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # choice i samples with seed + i
    logprobs: int | None = None  # None: none; k: the chosen token's and the k most likely ones'


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]  # the most likely tokens at this position, best first


@dataclass
class Chunk:
    """A piece of one choice's output; the last one of a choice has `finish_reason`:
    "stop" (a stop token or sequence), "length" (max_tokens) or "cancelled"."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0  # set on the last chunk


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    n: int = 1
    emit: Callable[[Chunk], None] = lambda chunk: None
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    logprobs: list[TokenLogprob]
    completion_tokens: int


class _Row:
    """One choice being generated: its tokens, how much of its text was sent, its RNG."""

    def __init__(self, request: Request, index: int, device: torch.device):
        self.request, self.index = request, index
        self.params = request.params
        self.rng = torch.Generator(device=device)
        seed = self.params.seed
        self.rng.manual_seed(
            seed + index if seed is not None else random.SystemRandom().getrandbits(63)
        )
        self.ids: list[int] = []
        self.sent = 0  # characters of the text already emitted
        self.pending_logprobs: list[TokenLogprob] = []
        self.done = False

    def finish(self, text: str, reason: str) -> None:
        self._emit(text[self.sent :], reason)
        self.done = True

    def _emit(self, text: str, reason: str | None = None) -> None:
        chunk = Chunk(
            index=self.index,
            text=text,
            logprobs=self.pending_logprobs,
            finish_reason=reason,
            completion_tokens=len(self.ids) if reason else 0,
        )
        self.pending_logprobs = []
        self.sent += len(text)
        self.request.emit(chunk)

    def advance(self, tokenizer: Any, token: int, stop_ids: set[int]) -> None:
        """Take the row's next token; emit what text is now certain; finish it if it ends."""
        self.ids.append(token)
        if self.request.cancelled():
            self.done = True  # nobody is listening: no final chunk is owed
            return
        if token in stop_ids:
            self.finish(tokenizer.decode(self.ids[:-1], skip_special_tokens=True), "stop")
            return
        text = tokenizer.decode(self.ids, skip_special_tokens=True)
        stops = self.params.stop
        found = [i for i in (text.find(s, max(0, self.sent - len(s))) for s in stops) if i >= 0]
        if found:
            self.finish(text[: min(found)], "stop")
            return
        if len(self.ids) >= self.params.max_tokens:
            self.finish(text, "length")
            return
        # a character whose bytes are split across tokens is not text yet
        settled = text.rstrip("\ufffd")
        # hold back a tail that may grow into a stop sequence
        held = max((_partial_stop(settled, s) for s in stops), default=0)
        keep = len(settled) - held
        if keep > self.sent:
            self._emit(text[self.sent : keep])


def _partial_stop(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop` (without being all of it)."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


class _PickTokens(LogitsProcessor):
    """Samples each row's next token with the row's own settings and RNG; `generate` (greedy)
    then takes it, since it is the only finite score."""

    def __init__(self, rows: list[_Row], tokenizer: Any):
        self.rows, self.tokenizer = rows, tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        scores = scores.float()
        # greedy rows (and finished ones, whose token generate ignores) in one argmax for the
        # batch: a Python loop over rows would cost more than the tiny models' forward pass
        tokens = scores.argmax(dim=-1)
        for r, row in enumerate(self.rows):
            if row.done:
                continue
            p = row.params
            if p.temperature > 1e-5:
                probs = torch.softmax(scores[r] / p.temperature, dim=-1)
                if p.top_p < 1.0:
                    sorted_probs, order = torch.sort(probs, descending=True)
                    # keep the smallest prefix whose mass reaches top_p (at least one token)
                    drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= p.top_p
                    probs = probs.scatter(0, order[drop], 0.0)
                tokens[r] = torch.multinomial(probs, 1, generator=row.rng)[0]
            if p.logprobs is not None:
                token = int(tokens[r])
                logp = torch.log_softmax(scores[r], dim=-1)
                top = []
                if p.logprobs > 0:
                    values, ids = torch.topk(logp, min(p.logprobs, logp.numel()))
                    top = [
                        (self.tokenizer.decode([i]), float(v))
                        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
                    ]
                row.pending_logprobs.append(
                    TokenLogprob(self.tokenizer.decode([token]), float(logp[token]), top)
                )
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter_(1, tokens.unsqueeze(1), 0.0)


class _FollowRows(StoppingCriteria):
    """After each token: every row's text increment out, and which rows are finished."""

    def __init__(self, rows: list[_Row], tokenizer: Any, stop_ids: list[int]):
        self.rows, self.tokenizer, self.stop_ids = rows, tokenizer, set(stop_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for r, row in enumerate(self.rows):
            if not row.done:
                row.advance(self.tokenizer, last[r], self.stop_ids)
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


def check_request(loaded: LoadedModel, prompt_ids: list[int], params: SamplingParams) -> None:
    """ValueError(field, message) for what the model cannot do: a prompt plus max_tokens longer
    than its context."""
    context = loaded.context_length
    if context is None:
        return
    if len(prompt_ids) >= context:
        raise RequestError(
            "prompt", f"the prompt is {len(prompt_ids)} tokens; this model's context is {context}"
        )
    if len(prompt_ids) + params.max_tokens > context:
        raise RequestError(
            "max_tokens",
            f"max_tokens is {params.max_tokens}, but the prompt's {len(prompt_ids)} tokens leave "
            f"{context - len(prompt_ids)} of this model's {context}-token context",
        )


class RequestError(ValueError):
    """A request this model cannot serve; `param` names the request field at fault."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param, self.message = param, message


@torch.inference_mode()
def generate_batch(loaded: LoadedModel, requests: list[Request]) -> int:
    """Run every choice of every request as one left-padded batch; output goes to each request's
    `emit`, ending each choice with a chunk that carries its finish_reason (a cancelled request
    gets no more chunks). Returns the number of tokens generated, all rows together."""
    rows = [_Row(req, i, loaded.device) for req in requests for i in range(req.n)]
    if not rows:
        return 0
    pad = loaded.tokenizer.pad_token_id
    width = max(len(row.request.prompt_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids = row.request.prompt_ids
        input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[r, width - len(ids) :] = 1
    # this call's settings on a copy of the model's plain config (for_model), never on the model
    config = copy.deepcopy(loaded.generation_config or loaded.model.generation_config)
    config.do_sample = False
    config.max_new_tokens = max(row.params.max_tokens for row in rows)
    config.use_cache = True
    loaded.model.generate(
        input_ids=input_ids.to(loaded.device),
        attention_mask=attention.to(loaded.device),
        generation_config=config,
        logits_processor=[_PickTokens(rows, loaded.tokenizer)],
        stopping_criteria=[_FollowRows(rows, loaded.tokenizer, loaded.stop_token_ids)],
    )
    for row in rows:  # generate stopped at the longest max_tokens
        if not row.done and not row.request.cancelled():
            text = loaded.tokenizer.decode(row.ids, skip_special_tokens=True)
            row.finish(text, "length")
    return sum(len(row.ids) for row in rows)


def generate(
    loaded: LoadedModel, prompt_ids: list[int], params: SamplingParams, n: int = 1
) -> list[Choice]:
    """One request's choices, whole (no streaming)."""
    check_request(loaded, prompt_ids, params)
    choices = {i: Choice(i, "", "", [], 0) for i in range(n)}

    def collect(chunk: Chunk) -> None:
        choice = choices[chunk.index]
        choice.text += chunk.text
        choice.logprobs += chunk.logprobs
        if chunk.finish_reason:
            choice.finish_reason = chunk.finish_reason
            choice.completion_tokens = chunk.completion_tokens

    generate_batch(loaded, [Request(prompt_ids, params, n, emit=collect)])
    return [choices[i] for i in range(n)]
