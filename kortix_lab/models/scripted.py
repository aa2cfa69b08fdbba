"""The ``scripted`` LiteLLM provider: an offline model that follows a scenario file.

It sits behind LiteLLM rather than beside it so the real adapter, retry logic,
stream wrapper and chunk assembly run in demos and tests exactly as they do
against a real provider; only the bytes are made up. ``model="scripted/<name>"``
picks the scenario (see ``kortix_lab.models.scenario`` and docs/scenarios.md).

Importing this module imports LiteLLM (≈2.5 s), because ``ScriptedLLM`` must
subclass ``litellm.CustomLLM``; keep it off hot import paths and reach it via
``kortix_lab.models.register_scripted_provider``, which imports it lazily.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Before LiteLLM's import: without it LiteLLM fetches the cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler  # noqa: E402
from litellm.llms.custom_llm import CustomLLM, CustomLLMError  # noqa: E402
from litellm.types.llms.openai import ChatCompletionToolCallChunk  # noqa: E402
from litellm.types.utils import (  # noqa: E402
    ChatCompletionMessageToolCall,
    Choices,
    GenericStreamingChunk,
    Message,
    ModelResponse,
    Usage,
)

from kortix_lab.models.scenario import (  # noqa: E402
    Reply,
    ScenarioError,
    ScenarioNotFound,
    list_scenarios,
    load_scenario,
    plan_reply,
)

PROVIDER = "scripted"

__all__ = ["PROVIDER", "ScriptedLLM", "ScriptedProviderError", "list_scenarios", "plan_for",
           "register_scripted_provider", "split_chunks"]

class ScriptedProviderError(CustomLLMError):
    """A scenario problem, carrying the HTTP status LiteLLM maps to its exception types."""

    def __init__(self, status_code: int, message: str) -> None:
        # CustomLLMError.__init__ is untyped; set the same attributes directly.
        Exception.__init__(self, message)
        self.status_code = status_code
        self.message = message


_PIECES = re.compile(r"\S+\s*|\s+")


def split_chunks(text: str, size: int) -> list[str]:
    """Cut text the way providers stream it: whole words up to ``size`` characters.

    Words longer than ``size`` are cut mid-word, which is what real token
    streams do to XML tags and JSON too, so stream parsers meet split markup.
    """
    chunks: list[str] = []
    current = ""
    for piece in _PIECES.findall(text):
        if current and len(current) + len(piece) > size:
            chunks.append(current)
            current = ""
        while len(piece) > size:
            chunks.append(piece[:size])
            piece = piece[size:]
        current += piece
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a scenario streams: chunk size and delays (seconds)."""

    size: int
    latency_s: float = 0.0
    chunk_delay_s: float = 0.0


def plan_for(model: str, messages: list[dict[str, Any]]) -> tuple[Reply, Pacing]:
    """The reply and how to stream it for a request, raising LiteLLM-mappable errors.

    ``model`` is what LiteLLM hands a custom provider: the part after
    ``scripted/``. Errors become ``CustomLLMError`` with an HTTP status so
    LiteLLM maps them to ``NotFoundError`` / ``BadRequestError``, which callers
    treat as non-retryable.
    """
    spec = model.removeprefix(f"{PROVIDER}/")
    try:
        scenario = load_scenario(spec)
    except ScenarioNotFound as exc:
        raise ScriptedProviderError(404, str(exc)) from exc
    except ScenarioError as exc:
        raise ScriptedProviderError(400, str(exc)) from exc
    return plan_reply(scenario, messages), Pacing(
        scenario.chunk_size, scenario.latency_ms / 1000, scenario.chunk_delay_ms / 1000)


def _chunk(text: str = "",
           tool_use: ChatCompletionToolCallChunk | None = None) -> GenericStreamingChunk:
    return GenericStreamingChunk(text=text, tool_use=tool_use, is_finished=False,
                                 finish_reason="", usage=None, index=0)


def _stream_chunks(reply: Reply, size: int) -> Iterator[GenericStreamingChunk]:
    for text in split_chunks(reply.text, size):
        yield _chunk(text)
    for index, call in enumerate(reply.tool_calls):
        # OpenAI's shape: the first delta names the call, later ones carry only
        # argument fragments with id and name None; LiteLLM's wrapper passes
        # them through and the consumer joins fragments by ``index``.
        yield _chunk(tool_use=ChatCompletionToolCallChunk(
            id=call.id, type="function", function={"name": call.name, "arguments": ""},
            index=index))
        for fragment in split_chunks(call.arguments, size):
            yield _chunk(tool_use=ChatCompletionToolCallChunk(
                id=None, type="function", function={"name": None, "arguments": fragment},
                index=index))
    yield GenericStreamingChunk(text="", tool_use=None, is_finished=True,
                               finish_reason=reply.finish_reason,
                               usage={"prompt_tokens": reply.prompt_tokens,
                                      "completion_tokens": reply.completion_tokens,
                                      "total_tokens": reply.total_tokens},
                               index=0)


def _paced(reply: Reply, pacing: Pacing) -> Iterator[GenericStreamingChunk]:
    if pacing.latency_s:
        time.sleep(pacing.latency_s)
    for index, chunk in enumerate(_stream_chunks(reply, pacing.size)):
        if index and pacing.chunk_delay_s:
            time.sleep(pacing.chunk_delay_s)
        yield chunk


async def _astream_chunks(reply: Reply, pacing: Pacing
                          ) -> AsyncIterator[GenericStreamingChunk]:
    if pacing.latency_s:
        await asyncio.sleep(pacing.latency_s)
    for index, chunk in enumerate(_stream_chunks(reply, pacing.size)):
        if index and pacing.chunk_delay_s:
            await asyncio.sleep(pacing.chunk_delay_s)
        yield chunk


def _fill_response(model_response: ModelResponse, model: str, reply: Reply) -> ModelResponse:
    tool_calls = [ChatCompletionMessageToolCall(
        id=call.id, type="function", function={"name": call.name, "arguments": call.arguments})
        for call in reply.tool_calls]
    model_response.choices = [Choices(
        index=0, finish_reason=reply.finish_reason,
        message=Message(content=reply.text or None, role="assistant",
                        tool_calls=tool_calls or None))]
    model_response.model = f"{PROVIDER}/{model}"
    model_response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
        total_tokens=reply.total_tokens)
    return model_response


class ScriptedLLM(CustomLLM):
    """LiteLLM custom provider answering from scenario files.

    All four entry points decide the reply before returning, so an unknown
    scenario fails the ``completion`` call itself rather than the first
    iteration of a stream.
    """

    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> ModelResponse:
        reply, pacing = plan_for(model, messages)
        if pacing.latency_s:
            time.sleep(pacing.latency_s)
        return _fill_response(model_response, model, reply)

    def streaming(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> Iterator[GenericStreamingChunk]:
        reply, pacing = plan_for(model, messages)
        return _paced(reply, pacing)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109 (LiteLLM's signature)
        client: AsyncHTTPHandler | None = None,
    ) -> ModelResponse:
        reply, pacing = plan_for(model, messages)
        if pacing.latency_s:
            await asyncio.sleep(pacing.latency_s)
        return _fill_response(model_response, model, reply)

    # A plain ``def`` on purpose (LiteLLM passes the returned iterator straight
    # to its stream wrapper without awaiting), so scenario errors surface at
    # ``await litellm.acompletion(...)``; hence the override ignore.
    def astreaming(  # type: ignore[override, misc]
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109 (LiteLLM's signature)
        client: AsyncHTTPHandler | None = None,
    ) -> AsyncIterator[GenericStreamingChunk]:
        reply, pacing = plan_for(model, messages)
        return _astream_chunks(reply, pacing)


_register_lock = threading.Lock()


def register_scripted_provider() -> None:
    """Make ``scripted/<scenario>`` a LiteLLM model; calling it again changes nothing."""
    from litellm.utils import custom_llm_setup

    with _register_lock:
        litellm.suppress_debug_info = True
        if not any(item.get("provider") == PROVIDER for item in litellm.custom_provider_map):
            litellm.custom_provider_map.append({"provider": PROVIDER,
                                                "custom_handler": ScriptedLLM()})
        # LiteLLM also runs this on every call, but get_llm_provider() and
        # friends used before the first call need the provider listed now.
        custom_llm_setup()  # type: ignore[no-untyped-call]
