"""Generation on the tiny preset (replay_engine.generation): stop sequences and tokens, seeds,
log-probabilities checked against the model's own forward pass, chat rendering, batching,
cancellation and the context limit."""

import pytest
import torch

from replay_engine.data import PLAIN_CHAT_STOP
from replay_engine.generation import (
    Request,
    RequestError,
    SamplingParams,
    check_request,
    encode_chat,
    encode_text,
    generate,
    generate_batch,
    load_for_generation,
)

TINY = "replayft/llama-tiny"
GREEDY = SamplingParams(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def tiny():
    return load_for_generation(TINY, device="cpu")


@pytest.fixture(scope="module")
def prompt(tiny):
    return encode_text(tiny, "Question: what is 2 + 3?\nAnswer:")


def stream(tiny, prompt, params, n=1, cancel_after=None):
    """Chunks of one request run through generate_batch, as the serving process runs them."""
    chunks = []

    def cancelled():
        return cancel_after is not None and len(chunks) >= cancel_after

    generate_batch(tiny, [Request(prompt, params, n, emit=chunks.append, cancelled=cancelled)])
    return chunks


def test_greedy_runs_to_max_tokens_and_streams_the_same_text(tiny, prompt):
    [choice] = generate(tiny, prompt, GREEDY)
    assert choice.finish_reason == "length" and choice.completion_tokens == 24
    chunks = stream(tiny, prompt, GREEDY)
    assert "".join(c.text for c in chunks) == choice.text and len(chunks) > 1
    assert [c.finish_reason for c in chunks][-1] == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_a_stop_sequence_ends_the_text_before_it_and_is_never_streamed(tiny, prompt):
    [full] = generate(tiny, prompt, GREEDY)
    stop = full.text[5:9]  # four characters of what greedy decoding writes
    expected = full.text[: full.text.find(stop)]
    params = SamplingParams(max_tokens=24, temperature=0, stop=("never-there", stop))
    [choice] = generate(tiny, prompt, params)
    assert (choice.text, choice.finish_reason) == (expected, "stop")
    chunks = stream(tiny, prompt, params)
    assert "".join(c.text for c in chunks) == expected
    assert chunks[-1].finish_reason == "stop"


def test_a_stop_token_ends_the_choice(tiny, prompt):
    [full] = generate(tiny, prompt, SamplingParams(max_tokens=4, temperature=0, logprobs=0))
    first = tiny.tokenizer.encode(full.logprobs[0].token)
    [token] = first
    saved = tiny.stop_token_ids
    tiny.stop_token_ids = [*saved, token]
    try:
        [choice] = generate(tiny, prompt, GREEDY)
    finally:
        tiny.stop_token_ids = saved
    assert (choice.text, choice.finish_reason, choice.completion_tokens) == ("", "stop", 1)


def test_the_same_seed_gives_the_same_samples(tiny, prompt):
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=11)
    a = generate(tiny, prompt, params, n=2)
    b = generate(tiny, prompt, params, n=2)
    assert [c.text for c in a] == [c.text for c in b]
    assert a[0].text != a[1].text  # choice i samples with seed + i
    [third] = generate(tiny, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=12))
    other = generate(tiny, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=11))
    assert other[0].text != third.text


def test_logprobs_are_the_models_own(tiny, prompt):
    params = SamplingParams(max_tokens=3, temperature=0.8, seed=1, logprobs=3)
    [choice] = generate(tiny, prompt, params)
    assert len(choice.logprobs) == 3
    ids = list(prompt)
    with torch.no_grad():
        for entry in choice.logprobs:
            logits = tiny.model(torch.tensor([ids])).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            [token] = tiny.tokenizer.encode(entry.token)
            assert entry.logprob == pytest.approx(float(logp[token]), abs=1e-4)
            best = torch.topk(logp, 3)
            assert [t for t, _ in entry.top] == [tiny.tokenizer.decode([i]) for i in best.indices]
            assert [v for _, v in entry.top] == pytest.approx(best.values.tolist(), abs=1e-4)
            ids.append(token)


def test_a_batch_gives_each_request_what_it_gets_alone(tiny, prompt):
    chat = encode_chat(tiny, [{"role": "user", "content": "Hi"}])
    alone = [generate(tiny, p, GREEDY)[0].text for p in (prompt, chat)]
    out = {0: "", 1: ""}
    requests = []
    for i, p in enumerate((prompt, chat)):
        requests.append(Request(p, GREEDY, emit=lambda c, i=i: out.__setitem__(i, out[i] + c.text)))
    generate_batch(tiny, requests)
    assert [out[0], out[1]] == alone


def test_cancelling_stops_the_choice_without_a_final_chunk(tiny, prompt):
    params = SamplingParams(max_tokens=200, temperature=0)
    chunks = stream(tiny, prompt, params, cancel_after=2)
    assert len(chunks) == 2 and all(c.finish_reason is None for c in chunks)


def test_presets_chat_in_chatml_and_stop_at_the_turn_end(tiny):
    ids = encode_chat(
        tiny, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    text = tiny.tokenizer.decode(ids)
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    im_end = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tiny.stop_token_ids and tiny.tokenizer.eos_token_id in tiny.stop_token_ids
    assert tiny.chat_stop == ()


def test_a_tokenizer_without_template_gets_the_plain_rendering_training_uses(tmp_path):
    loaded = load_for_generation(TINY, device="cpu")
    loaded.tokenizer.chat_template = None
    loaded.chat_stop = (PLAIN_CHAT_STOP,)
    ids = encode_chat(loaded, [{"role": "user", "content": "Hi"}])
    assert loaded.tokenizer.decode(ids) == "User: Hi\n\nAssistant:"


def test_max_tokens_beyond_the_context_names_the_field(tiny, prompt):
    room = tiny.context_length - len(prompt)
    check_request(tiny, prompt, SamplingParams(max_tokens=room))
    with pytest.raises(RequestError) as err:
        check_request(tiny, prompt, SamplingParams(max_tokens=room + 1))
    assert err.value.param == "max_tokens" and str(tiny.context_length) in err.value.message
    with pytest.raises(RequestError) as err:
        check_request(tiny, [1] * tiny.context_length, SamplingParams(max_tokens=1))
    assert err.value.param == "prompt"
