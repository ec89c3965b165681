"""The built-in offline models llmbus-sim/small and llmbus-sim/large, as a litellm provider."""

import os

# Before the first `import litellm`: offline, fetching the remote price map costs seconds.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import litellm
from litellm import CustomLLM, ModelResponse, Usage
from litellm.types.llms.openai import ChatCompletionUsageBlock
from litellm.types.utils import GenericStreamingChunk

from llmbus.shared.catalog import SIM_MODELS
from llmbus.shared.catalog import SIM_PROVIDER as PROVIDER

FinishReason = Literal["stop", "length"]

LATENCY_ENV = "LLMBUS_SIM_LATENCY_MS"

# How many sentences each size says after restating the question.
SENTENCES = {"small": 2, "large": 6}

CORPUS = (
    "This answer was produced offline by a simulated model, so no provider was called.",
    "The reply is derived from a hash of the conversation, so the same messages give the same text.",
    "Token counts come from litellm's tokenizer and the cost from the simulated list price.",
    "A real deployment would send this request to a hosted model instead.",
    "Simulated answers are useful for demos, tests and budget rehearsals.",
    "Nothing in this reply should be taken as a considered opinion.",
    "The larger simulated model writes longer answers and charges more per token.",
    "Every request still produces the same events as a call to a real provider.",
    "Latency can be simulated with the LLMBUS_SIM_LATENCY_MS environment variable.",
    "Budgets, usage analytics and conversations all work with simulated replies.",
)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def conversation_digest(messages: list[dict[str, Any]]) -> int:
    text = "\x1e".join(f"{m.get('role')}\x1f{m.get('content')}" for m in messages)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def sim_reply(size: str, messages: list[dict[str, Any]]) -> str:
    digest = conversation_digest(messages)
    question = " ".join(last_user_text(messages).split())
    if len(question) > 80:
        question = question[:77] + "..."
    start = digest % len(CORPUS)
    picked = [CORPUS[(start + i * 3) % len(CORPUS)] for i in range(SENTENCES[size])]
    return f"[{PROVIDER}/{size}] You asked: “{question}”. " + " ".join(picked)


def truncate_to_tokens(model: str, text: str, max_tokens: int | None) -> tuple[str, FinishReason]:
    if max_tokens is None:
        return text, "stop"
    tokens = litellm.encode(model=model, text=text)
    if len(tokens) <= max_tokens:
        return text, "stop"
    return litellm.decode(model=model, tokens=tokens[:max_tokens]), "length"


def simulated_latency_s() -> float:
    return float(os.environ.get(LATENCY_ENV) or 0) / 1000


class SimAnswer:
    def __init__(self, model: str, messages: list[dict[str, Any]], optional_params: dict) -> None:
        self.size = model.removeprefix(f"{PROVIDER}/")
        if self.size not in SENTENCES:
            raise litellm.NotFoundError(
                message=f"{PROVIDER} has no model {model!r}; try small or large",
                model=model,
                llm_provider=PROVIDER,
            )
        self.model = f"{PROVIDER}/{self.size}"
        max_tokens = optional_params.get("max_tokens") or optional_params.get(
            "max_completion_tokens"
        )
        self.text, self.finish_reason = truncate_to_tokens(
            self.model, sim_reply(self.size, messages), max_tokens
        )
        self.prompt_tokens = litellm.token_counter(model=self.model, messages=messages)
        self.completion_tokens = litellm.token_counter(
            model=self.model, text=self.text, count_response_tokens=True
        )

    def usage(self) -> ChatCompletionUsageBlock:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def fill(self, model_response: ModelResponse) -> ModelResponse:
        choice = model_response.choices[0]
        choice.message.content = self.text
        choice.finish_reason = self.finish_reason
        model_response.model = self.model
        model_response.created = int(time.time())
        model_response.usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )
        return model_response


class SimLLM(CustomLLM):
    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> ModelResponse:
        answer = SimAnswer(model, messages, optional_params)
        await simulate_latency()
        return answer.fill(model_response)

    def completion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> ModelResponse:
        answer = SimAnswer(model, messages, optional_params)
        time.sleep(simulated_latency_s())
        return answer.fill(model_response)

    async def astreaming(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> AsyncIterator[GenericStreamingChunk]:
        answer = SimAnswer(model, messages, optional_params)
        await simulate_latency()
        words = answer.text.split(" ")
        for index, word in enumerate(words):
            yield {
                "text": word if index == 0 else f" {word}",
                "is_finished": False,
                "finish_reason": "",
                "usage": None,
                "index": 0,
                "tool_use": None,
            }
        yield {
            "text": "",
            "is_finished": True,
            "finish_reason": answer.finish_reason,
            "usage": answer.usage(),
            "index": 0,
            "tool_use": None,
        }


async def simulate_latency() -> None:
    delay = simulated_latency_s()
    if delay > 0:
        await asyncio.sleep(delay)


_handler = SimLLM()


def register_sim_provider() -> None:
    if any(item["provider"] == PROVIDER for item in litellm.custom_provider_map):
        return
    litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _handler})
    # litellm runs this on every call; running it now lets get_llm_provider see us before then.
    litellm.utils.custom_llm_setup()
    litellm.register_model(SIM_MODELS)
