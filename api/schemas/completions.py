"""Chat and text completions in OpenAI's request and response shapes.

Fields OpenAI defines that ReplayFT does not implement are refused with a 400 naming them when
set to anything but their neutral value (a penalty of 0, `echo: false`, no tools), rather than
silently ignored; fields it does not know at all are ignored, as OpenAI's SDK sends only what
the caller set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_N = 16
MAX_CHAT_TOP_LOGPROBS = 20
MAX_TEXT_LOGPROBS = 5

Stop = str | Annotated[list[str], Field(max_length=MAX_STOP)] | None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(
        description="A string, or text parts (`[{type: text, text}]`) joined in order."
    )
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What both endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="A model id from GET /v1/models, or a checkpoint's id.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N, description="Choices to generate.")
    stop: Stop = Field(None, description="Up to 4 sequences where generation stops.")
    seed: int | None = Field(
        None,
        ge=-(2**63),
        lt=2**63,
        description="Same seed, model and request: same text (choice i samples with seed + i).",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = Field(0, description="Not supported: must be 0.")
    presence_penalty: float = Field(0, description="Not supported: must be 0.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported.")
    user: str | None = None

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("is not supported by ReplayFT; leave it 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> None:
        if value:
            raise ValueError("is not supported by ReplayFT")
        return None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: Stop) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    def stop_list(self) -> list[str]:
        return list(self.stop or [])


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate; unset = what the context leaves."
    )
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    tools: list[Any] | None = Field(None, description="Not supported.")
    response_format: dict[str, Any] | None = Field(None, description="Only {type: text}.")

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> None:
        if value:
            raise ValueError("tool calling is not supported by ReplayFT")
        return None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type") != "text":
            raise ValueError("only {'type': 'text'} is supported")
        return value

    @field_validator("messages")
    @classmethod
    def _starts_with_a_prompt(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[0].role == "assistant":
            raise ValueError("a conversation must start with a system or user message")
        return value

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def limit_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_N)] = Field(
        description="A text, or a list of texts (each gets n choices)."
    )
    max_tokens: int = Field(16, ge=1, description="Most tokens to generate (OpenAI's default 16).")
    logprobs: int | None = Field(None, ge=0, le=MAX_TEXT_LOGPROBS)
    echo: bool = Field(False, description="Not supported: must be false.")
    suffix: str | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, description="Only 1 (or unset) is supported.")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("is not supported by ReplayFT")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> None:
        if value:
            raise ValueError("is not supported by ReplayFT")
        return None

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only 1 is supported")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---------------------------------------------------------------------------- responses
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class TextLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    system_fingerprint: str | None = None
