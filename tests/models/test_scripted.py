"""The scripted provider, exercised through real LiteLLM calls.

Going through ``litellm.acompletion`` rather than calling ``ScriptedLLM``
directly is the point: the stream wrapper's chunk handling and the tool-call
delta shapes are what the engine's adapter will meet.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import litellm  # noqa: E402

from kortix_lab.models import list_scenarios, load_scenario, register_scripted_provider  # noqa: E402
from kortix_lab.models.scenario import (  # noqa: E402
    SCENARIO_DIR_ENV,
    ScenarioError,
    parse_scenario,
    plan_reply,
)
from kortix_lab.models.scripted import PROVIDER, split_chunks  # noqa: E402

register_scripted_provider()

TOOLS = [{"type": "function", "function": {
    "name": name, "description": name,
    "parameters": {"type": "object", "properties": {}}}}
    for name in ("execute_command", "complete")]


@dataclass
class Collected:
    """One streamed response, assembled the way the engine's adapter must."""

    texts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None

    @property
    def text(self) -> str:
        return "".join(self.texts)


async def stream(model: str, messages: list[dict[str, Any]]) -> Collected:
    response = await litellm.acompletion(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True},
        tools=TOOLS)
    out = Collected()
    async for chunk in response:
        if getattr(chunk, "usage", None) is not None:
            out.usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            out.texts.append(choice.delta.content)
        for delta in choice.delta.tool_calls or []:
            call = out.calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function.name:
                call["name"] = delta.function.name
            call["arguments"] += delta.function.arguments or ""
        if choice.finish_reason:
            out.finish_reason = choice.finish_reason
    return out


def scenario(tmp_path: Path, body: dict[str, Any] | str, name: str = "s.yaml") -> str:
    """Write a scenario file and return the model string that selects it."""
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
    return f"{PROVIDER}/{path}"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str = "", calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return message


LONG_TEXT = ("Let me look at the data first.\nThen I will  summarise it, carefully:"
             " supercalifragilisticexpialidocious words get cut too.  ")


@pytest.mark.asyncio
async def test_text_streams_in_several_chunks_that_concatenate_exactly(tmp_path: Path) -> None:
    model = scenario(tmp_path, {"chunk_size": 10, "turns": [{"responses": [LONG_TEXT]}]})

    got = await stream(model, [user("hi")])

    assert got.text == LONG_TEXT
    assert len(got.texts) > 5
    assert all(len(t) <= 10 for t in got.texts)
    assert got.finish_reason == "stop"
    assert got.calls == {}


def test_split_chunks_keeps_every_character_and_prefers_word_boundaries() -> None:
    for size in (1, 3, 7, 12, 40, 1000):
        chunks = split_chunks(LONG_TEXT, size)
        assert "".join(chunks) == LONG_TEXT
        assert all(0 < len(c) <= size for c in chunks)
    assert split_chunks("one two three four", 8) == ["one two ", "three ", "four"]
    assert split_chunks("", 5) == []


@pytest.mark.asyncio
async def test_native_tool_calls_assemble_from_deltas(tmp_path: Path) -> None:
    model = scenario(tmp_path, """
chunk_size: 6
turns:
  - responses:
      - text: "Let me look."
        tool_calls:
          - name: execute_command
            arguments: {command: "ls -la /workspace", blocking: true}
          - name: complete
            arguments: {text: "done"}
""")
    got = await stream(model, [user("list files")])

    assert got.text == "Let me look."
    assert got.finish_reason == "tool_calls"
    assert [got.calls[i]["name"] for i in sorted(got.calls)] == ["execute_command", "complete"]
    assert json.loads(got.calls[0]["arguments"]) == {"command": "ls -la /workspace",
                                                     "blocking": True}
    assert json.loads(got.calls[1]["arguments"]) == {"text": "done"}
    ids = [got.calls[i]["id"] for i in sorted(got.calls)]
    assert all(ids) and len(set(ids)) == 2


@pytest.mark.asyncio
async def test_xml_tool_calls_in_text_pass_through_untouched(tmp_path: Path) -> None:
    xml = ('Here is an XML call <function_calls><invoke name="complete">'
           '<parameter name="text">done & "quoted" {{ not a placeholder</parameter>'
           '</invoke></function_calls>\n')
    model = scenario(tmp_path, {"chunk_size": 5, "turns": [{"responses": [{"text": xml}]}]})

    got = await stream(model, [user("go")])

    assert got.text == xml
    assert got.calls == {}
    assert got.finish_reason == "stop"


TURNS = {
    "turns": [
        {"match": "(?i)weather", "responses": ["It is sunny."]},
        {"responses": ["First unmatched turn."]},
        {"responses": ["Second unmatched turn."]},
    ],
    "fallback": "Nothing scripted.",
}


@pytest.mark.asyncio
async def test_turns_are_chosen_by_match_first_then_by_order(tmp_path: Path) -> None:
    model = scenario(tmp_path, TURNS)

    first = await stream(model, [user("hello")])
    by_match = await stream(model, [user("hello"), assistant("First unmatched turn."),
                                    user("How is the WEATHER?")])
    second = await stream(model, [user("hello"), assistant("First unmatched turn."),
                                  user("and now?")])
    third = await stream(model, [user("a"), assistant("x"), user("b"), assistant("y"),
                                 user("c")])

    assert first.text == "First unmatched turn."
    assert by_match.text == "It is sunny."
    assert second.text == "Second unmatched turn."
    assert third.text == "Nothing scripted."


@pytest.mark.asyncio
async def test_response_index_advances_with_assistant_messages_after_the_user(
        tmp_path: Path) -> None:
    model = scenario(tmp_path, """
turns:
  - responses:
      - text: "Step one."
        tool_calls: [{name: execute_command, arguments: {command: ls}}]
      - text: "Step two."
      - "Step three."
""")
    call = {"id": "call_1_1_1", "type": "function",
            "function": {"name": "execute_command", "arguments": '{"command": "ls"}'}}
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are helpful."},
                                     user("start")]

    one = await stream(model, history)
    history += [assistant("Step one.", [call]),
                {"role": "tool", "tool_call_id": "call_1_1_1", "name": "execute_command",
                 "content": "a.txt"}]
    two = await stream(model, history)
    history.append(assistant("Step two."))
    three = await stream(model, history)

    assert (one.text, one.finish_reason) == ("Step one.", "tool_calls")
    assert one.calls[0]["id"] == "call_1_1_1"
    assert (two.text, two.finish_reason, two.calls) == ("Step two.", "stop", {})
    assert three.text == "Step three."


@pytest.mark.asyncio
async def test_xml_tool_results_sent_as_user_messages_do_not_start_a_turn(
        tmp_path: Path) -> None:
    model = scenario(tmp_path, {"turns": [
        {"responses": ['<function_calls><invoke name="execute_command">'
                       '<parameter name="command">ls</parameter></invoke></function_calls>',
                       "Result was {{tool_result}}"]},
        {"responses": ["Second turn."]},
    ]})
    results = ("<function_results><result><tool>execute_command</tool>"
               "<output>a.txt</output></result></function_results>")

    got = await stream(model, [user("list"), assistant("<function_calls>…</function_calls>"),
                               user("  " + results)])

    assert got.text == f"Result was   {results}"


@pytest.mark.asyncio
async def test_malformed_raw_arguments_come_through_as_is(tmp_path: Path) -> None:
    raw = '{"command": "echo {{user}}", '
    model = scenario(tmp_path, {"chunk_size": 4, "turns": [{"responses": [
        {"tool_calls": [{"name": "execute_command", "raw_arguments": raw}]},
        {"name": "complete", "raw_arguments": "not json at all"},   # the shorthand form
    ]}]})

    got = await stream(model, [user("hi")])
    full = await litellm.acompletion(model=model, messages=[user("hi"), assistant("")],
                                     tools=TOOLS)

    assert got.calls[0]["name"] == "execute_command"
    assert got.calls[0]["arguments"] == '{"command": "echo hi", '
    assert got.finish_reason == "tool_calls"
    call = full.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("complete", "not json at all")


@pytest.mark.asyncio
async def test_usage_is_reported_estimated_or_scripted(tmp_path: Path) -> None:
    auto = scenario(tmp_path, {"turns": [{"responses": ["x" * 40]}]}, "auto.yaml")
    fixed = scenario(tmp_path, {"usage": {"prompt_tokens": 100, "completion_tokens": 7},
                                "turns": [{"responses": [
                                    {"text": "hi", "usage": {"completion_tokens": 3}}]}]},
                     "fixed.yaml")

    got_auto = await stream(auto, [user("y" * 80)])
    got_fixed = await stream(fixed, [user("hello")])
    full = await litellm.acompletion(model=fixed, messages=[user("hello")])

    assert (got_auto.usage.prompt_tokens, got_auto.usage.completion_tokens) == (20, 10)
    assert got_auto.usage.total_tokens == 30
    assert (got_fixed.usage.prompt_tokens, got_fixed.usage.completion_tokens) == (100, 3)
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (100, 3)


@pytest.mark.asyncio
@pytest.mark.parametrize("streaming", [True, False])
async def test_unknown_scenario_is_a_clear_not_found_error(streaming: bool) -> None:
    with pytest.raises(litellm.NotFoundError) as err:
        await litellm.acompletion(model="scripted/no-such-scenario", messages=[user("x")],
                                  stream=streaming)

    message = str(err.value)
    assert "unknown scenario 'no-such-scenario'" in message
    assert "Built-in scenarios: " in message
    assert "echo, hello" in message


@pytest.mark.asyncio
async def test_missing_scenario_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(litellm.NotFoundError, match="unknown scenario"):
        await litellm.acompletion(model=f"scripted/{tmp_path / 'missing.yaml'}",
                                  messages=[user("x")], stream=True)


@pytest.mark.asyncio
async def test_invalid_scenario_is_a_bad_request_naming_the_field(tmp_path: Path) -> None:
    typo = scenario(tmp_path, {"turns": [{"respones": ["hi"]}]}, "typo.yaml")
    bad_regex = scenario(tmp_path, {"turns": [{"match": "(", "responses": ["hi"]}]}, "re.yaml")
    not_yaml = scenario(tmp_path, "turns: [unclosed", "broken.yaml")

    with pytest.raises(litellm.BadRequestError, match=r"turns\.0\.respones"):
        await litellm.acompletion(model=typo, messages=[user("x")])
    with pytest.raises(litellm.BadRequestError, match="invalid regular expression"):
        await litellm.acompletion(model=bad_regex, messages=[user("x")], stream=True)
    with pytest.raises(litellm.BadRequestError, match="not valid YAML"):
        await litellm.acompletion(model=not_yaml, messages=[user("x")])


@pytest.mark.asyncio
async def test_fallback_when_out_of_responses(tmp_path: Path) -> None:
    model = scenario(tmp_path, {"turns": [{"responses": ["Only one."]}],
                                "fallback": "No more for {{user}}."})

    got = await stream(model, [user("q"), assistant("Only one.")])

    assert got.text == "No more for q."
    assert got.finish_reason == "stop"
    assert got.calls == {}


@pytest.mark.asyncio
async def test_placeholders_fill_text_and_arguments(tmp_path: Path) -> None:
    model = scenario(tmp_path, {"turns": [
        {"responses": ["One."]},
        {"responses": [{"text": "Turn {{n}}, step {{ step }}: {{user}} {{unknown}}",
                        "tool_calls": [{"name": "complete",
                                        "arguments": {"text": "You said {{user}}",
                                                      "items": ["{{user}}", 3]}}]}]},
    ]})
    tricky = 'say "hi"\nand {braces} \\ back'

    got = await stream(model, [user("first"), assistant("One."), user(tricky)])

    assert got.text == f"Turn 2, step 1: {tricky} {{{{unknown}}}}"
    assert json.loads(got.calls[0]["arguments"]) == {"text": f"You said {tricky}",
                                                     "items": [tricky, 3]}
    assert got.calls[0]["id"] == "call_2_1_1"


@pytest.mark.asyncio
async def test_scripted_finish_reason_length(tmp_path: Path) -> None:
    model = scenario(tmp_path, {"turns": [{"responses": [
        {"text": "This answer is cut", "finish_reason": "length"}, " off here."]}]})

    first = await stream(model, [user("write")])
    rest = await stream(model, [user("write"), assistant("This answer is cut")])

    assert (first.text, first.finish_reason) == ("This answer is cut", "length")
    assert (rest.text, rest.finish_reason) == (" off here.", "stop")


@pytest.mark.asyncio
async def test_non_streaming_response_has_content_tool_calls_and_usage() -> None:
    response = await litellm.acompletion(model="scripted/hello", messages=[user("Ann")],
                                         tools=TOOLS)

    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content.startswith("Hello!")
    (call,) = choice.message.tool_calls
    assert call.function.name == "complete"
    assert json.loads(call.function.arguments) == {"text": "Said hello in reply to: Ann"}
    assert response.usage.total_tokens > 0
    assert response.model == "scripted/hello"


def test_sync_completion_and_sync_streaming_work() -> None:
    full = litellm.completion(model="scripted/echo", messages=[user("ping pong")])
    chunks = litellm.completion(model="scripted/echo", messages=[user("ping pong")],
                                stream=True)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]

    assert full.choices[0].message.content == "You said: ping pong"
    assert full.choices[0].message.tool_calls is None
    assert "".join(texts) == "You said: ping pong"


@pytest.mark.asyncio
async def test_echo_replies_to_every_message_and_takes_multimodal_text() -> None:
    parts = [{"type": "text", "text": "look at "},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
             {"type": "text", "text": "this"}]

    got = await stream("scripted/echo", [user("one"), assistant("You said: one"),
                                         {"role": "user", "content": parts}])

    assert got.text == "You said: look at this"


@pytest.mark.asyncio
async def test_relative_path_json_file_and_scenario_dir(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rel.json").write_text(json.dumps({"turns": [{"responses": ["from json"]}]}))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "mine.yaml").write_text("turns: [{responses: [from the scenario dir]}]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SCENARIO_DIR_ENV, str(extra))

    relative = await stream("scripted/./rel.json", [user("x")])
    by_name = await stream("scripted/mine", [user("x")])

    assert relative.text == "from json"
    assert by_name.text == "from the scenario dir"
    assert {"echo", "hello", "mine"} <= set(list_scenarios())


def test_list_scenarios_names_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCENARIO_DIR_ENV, raising=False)

    names = list_scenarios()
    assert {"echo", "hello"} <= set(names)
    assert names == sorted(names)
    assert load_scenario("hello").name == "hello"


def test_parsed_scenarios_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("turns: [{responses: [one]}]\n")
    first = load_scenario(str(path))

    assert load_scenario(str(path)) is first
    path.write_text("turns: [{responses: [two, three]}]\n")
    os.utime(path, ns=(0, 10**9))
    second = load_scenario(str(path))

    assert second is not first
    assert [r.text for r in second.turns[0].responses] == ["two", "three"]


def test_register_is_idempotent() -> None:
    register_scripted_provider()
    register_scripted_provider()

    assert [p["provider"] for p in litellm.custom_provider_map].count(PROVIDER) == 1
    assert PROVIDER in litellm.provider_list


def test_both_argument_forms_at_once_is_an_error() -> None:
    with pytest.raises(ScenarioError, match="either 'arguments' or 'raw_arguments'"):
        parse_scenario("turns: [{responses: [{tool_calls: "
                       "[{name: x, arguments: {}, raw_arguments: '{}'}]}]}]")


def test_no_user_message_gets_the_fallback() -> None:
    reply = plan_reply(parse_scenario("turns: [{responses: [hi]}]\nfallback: none"),
                       [{"role": "system", "content": "sys"}])

    assert (reply.text, reply.turn, reply.finish_reason) == ("none", None, "stop")


@pytest.mark.asyncio
async def test_tool_result_placeholder_joins_the_native_results_of_the_last_call(
        tmp_path: Path) -> None:
    model = scenario(tmp_path, {"turns": [{"responses": [
        {"tool_calls": [{"name": "execute_command", "arguments": {"command": "ls"}},
                        {"name": "execute_command", "arguments": {"command": "pwd"}}]},
        "Outputs:\n{{tool_result}}"]}]})
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": "execute_command", "arguments": "{}"}} for i in (1, 2)]

    got = await stream(model, [user("go"), assistant("", calls),
                               {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
                               {"role": "tool", "tool_call_id": "c2", "content": "/workspace"}])

    assert got.text == "Outputs:\na.txt\n/workspace"


@pytest.mark.asyncio
async def test_a_paced_scenario_waits_before_the_first_chunk_and_between_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``slow`` stands in for a remote model in the worker tests and benchmarks: the
    pauses are asked for (recorded, not timed: the machines are noisy)."""
    import asyncio

    import kortix_lab.models.scripted as scripted

    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float, *args: Any) -> Any:
        pauses.append(seconds)
        return await real_sleep(0)

    monkeypatch.setattr(scripted.asyncio, "sleep", recording_sleep)
    scenario = load_scenario("slow")
    out = await stream(f"{PROVIDER}/slow", [user("count the rows")])
    assert out.text.startswith("You said: count the rows.")
    assert pauses[0] == scenario.latency_ms / 1000
    chunks = len(split_chunks(out.text, scenario.chunk_size))
    assert pauses[1:].count(scenario.chunk_delay_ms / 1000) >= chunks - 1
