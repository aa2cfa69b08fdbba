"""The Store contract: what every ``Store`` implementation must do, tested through the Protocol.

Subclass ``StoreContract`` in a ``test_*.py`` module and provide a ``store``
fixture that yields a fresh, empty store (and closes it afterwards); every
test here then runs against that implementation. Nothing in this file may
know which backend it talks to: DuckDB today, Postgres next, same suite.

Orderings the contract fixes: ``list_threads`` newest-updated first;
``list_projects``, ``list_runs`` and ``list_agents`` oldest first;
``list_agent_versions`` by version number; messages by ``seq``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from kortix_lab.agentpress.errors import NotFound, StoreError
from kortix_lab.agentpress.store import (
    AgentConfig,
    Message,
    NewMessage,
    RunStart,
    Store,
)


def user(text: str) -> NewMessage:
    return NewMessage("user", {"role": "user", "content": text})


def assistant(text: str) -> NewMessage:
    return NewMessage("assistant", {"role": "assistant", "content": text})


def assert_utc(ts: datetime | None) -> None:
    assert ts is not None
    assert ts.utcoffset() == timedelta(0), f"{ts!r} is not timezone-aware UTC"


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


class StoreContract:
    """Every test takes ``store``: a fresh, empty store provided by the subclass."""

    # ------------------------------------------------------------------ protocol

    def test_implements_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    # ------------------------------------------------------------------ projects

    def test_project_round_trip(self, store: Store) -> None:
        project = store.create_project("analysis", metadata={"owner": "ana", "tags": ["x"]})
        assert project.name == "analysis" and project.sandbox_id is None
        assert_utc(project.created_at)
        assert store.get_project(project.project_id) == project

    def test_project_sandbox_is_set_and_cleared(self, store: Store) -> None:
        project = store.create_project("p")
        store.set_project_sandbox(project.project_id, "sbx-1")
        assert store.get_project(project.project_id).sandbox_id == "sbx-1"
        store.set_project_sandbox(project.project_id, None)
        assert store.get_project(project.project_id).sandbox_id is None

    def test_list_projects_oldest_first(self, store: Store) -> None:
        ids = [store.create_project(f"p{i}").project_id for i in range(3)]
        assert [p.project_id for p in store.list_projects()] == ids

    def test_unknown_project_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="project"):
            store.get_project("nope")
        with pytest.raises(NotFound):
            store.set_project_sandbox("nope", "sbx")

    # ------------------------------------------------------------------ threads

    def test_thread_round_trip(self, store: Store) -> None:
        project = store.create_project("p")
        thread = store.create_thread(name="t", project_id=project.project_id,
                                     metadata={"k": [1, 2]})
        assert_utc(thread.created_at)
        assert thread.updated_at == thread.created_at
        assert store.get_thread(thread.thread_id) == thread

    def test_thread_in_unknown_project_is_refused(self, store: Store) -> None:
        with pytest.raises(NotFound, match="project"):
            store.create_thread(project_id="nope")

    def test_unknown_thread_is_not_found_everywhere(self, store: Store) -> None:
        for call in (lambda: store.get_thread("nope"),
                     lambda: store.rename_thread("nope", "x"),
                     lambda: store.delete_thread("nope"),
                     lambda: store.add_messages("nope", [user("hi")]),
                     lambda: store.get_messages("nope"),
                     lambda: store.count_messages("nope"),
                     lambda: store.create_run("nope", model="m"),
                     lambda: store.thread_frame("nope")):
            with pytest.raises(NotFound, match="thread"):
                call()

    def test_find_thread_by_id_then_most_recently_updated_name(self, store: Store) -> None:
        older = store.create_thread(name="notes")
        newer = store.create_thread(name="notes")
        assert store.find_thread("notes") == store.get_thread(newer.thread_id)
        store.add_messages(older.thread_id, [user("bump")])
        found = store.find_thread("notes")
        assert found is not None and found.thread_id == older.thread_id
        assert found.updated_at > older.updated_at
        # An id wins over a name, even when another thread is named like that id.
        store.create_thread(name=newer.thread_id)
        by_id = store.find_thread(newer.thread_id)
        assert by_id is not None and by_id.thread_id == newer.thread_id
        assert store.find_thread("no such thread") is None

    def test_list_threads_newest_updated_first_and_by_project(self, store: Store) -> None:
        project = store.create_project("p")
        a = store.create_thread(name="a", project_id=project.project_id)
        b = store.create_thread(name="b")
        c = store.create_thread(name="c", project_id=project.project_id)
        assert [t.thread_id for t in store.list_threads()] == [c.thread_id, b.thread_id,
                                                              a.thread_id]
        store.add_messages(a.thread_id, [user("bump")])
        assert store.list_threads()[0].thread_id == a.thread_id
        assert [t.thread_id for t in store.list_threads(project_id=project.project_id)] == [
            a.thread_id, c.thread_id]

    def test_rename_thread_moves_updated_at(self, store: Store) -> None:
        thread = store.create_thread(name="old")
        renamed = store.rename_thread(thread.thread_id, "new")
        assert renamed.name == "new" and renamed.updated_at > thread.updated_at
        assert store.get_thread(thread.thread_id) == renamed
        assert store.find_thread("new") == renamed and store.find_thread("old") is None

    def test_delete_thread_removes_its_messages_and_runs_only(self, store: Store) -> None:
        doomed, kept = store.create_thread(), store.create_thread()
        message = store.add_messages(doomed.thread_id, [user("bye")])[0]
        run = store.create_run(doomed.thread_id, model="m")
        other = store.add_messages(kept.thread_id, [user("stay")])[0]
        kept_run = store.create_run(kept.thread_id, model="m")
        store.delete_thread(doomed.thread_id)
        with pytest.raises(NotFound):
            store.get_thread(doomed.thread_id)
        with pytest.raises(NotFound):
            store.get_message(message.message_id)
        with pytest.raises(NotFound):
            store.get_run(run.run_id)
        assert store.list_runs(thread_id=doomed.thread_id) == []
        assert [t.thread_id for t in store.list_threads()] == [kept.thread_id]
        assert store.get_message(other.message_id) == other
        assert store.list_runs() == [kept_run]

    # ------------------------------------------------------------------ messages

    def test_messages_get_gapless_seqs_across_batches(self, store: Store) -> None:
        thread = store.create_thread()
        first = store.add_messages(thread.thread_id, [user("a"), assistant("b")])
        second = store.add_messages(thread.thread_id, [user(f"m{i}") for i in range(12)])
        assert seqs(first) == [1, 2] and seqs(second) == list(range(3, 15))
        assert store.count_messages(thread.thread_id) == 14
        assert seqs(store.get_messages(thread.thread_id)) == list(range(1, 15))

    def test_seqs_are_per_thread(self, store: Store) -> None:
        a, b = store.create_thread(), store.create_thread()
        store.add_messages(a.thread_id, [user("1"), user("2")])
        assert seqs(store.add_messages(b.thread_id, [user("1")])) == [1]
        assert seqs(store.add_messages(a.thread_id, [user("3")])) == [3]

    def test_message_round_trip(self, store: Store) -> None:
        thread = store.create_thread()
        run = store.create_run(thread.thread_id, model="m")
        content = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "create_file", "arguments": '{"path": "a.py"}'}}]}
        new = [NewMessage("assistant", content, run_id=run.run_id, metadata={"step": 1}),
               NewMessage("status", {"text": "übersetzt ✓ 日本"}, is_llm_message=False)]
        stored = store.add_messages(thread.thread_id, new)
        for message, original in zip(stored, new, strict=True):
            assert message.thread_id == thread.thread_id
            assert (message.type, message.content, message.is_llm_message, message.run_id,
                    message.metadata) == (original.type, original.content,
                                          original.is_llm_message, original.run_id,
                                          original.metadata)
            assert_utc(message.created_at)
            assert store.get_message(message.message_id) == message
        assert store.get_messages(thread.thread_id) == stored

    def test_add_messages_moves_thread_updated_at(self, store: Store) -> None:
        thread = store.create_thread()
        message = store.add_messages(thread.thread_id, [user("hi")])[0]
        updated = store.get_thread(thread.thread_id).updated_at
        assert updated > thread.created_at and updated >= message.created_at

    def test_empty_batch_stores_nothing(self, store: Store) -> None:
        thread = store.create_thread()
        assert store.add_messages(thread.thread_id, []) == []
        assert store.count_messages(thread.thread_id) == 0

    @pytest.mark.parametrize("size", [3, 40])
    def test_a_failing_batch_stores_nothing(self, store: Store, size: int) -> None:
        thread = store.create_thread()
        store.add_messages(thread.thread_id, [user("before")])
        batch = [user(f"m{i}") for i in range(size)]
        # An invalid type in the middle: the database refuses it after earlier rows.
        batch[size // 2] = NewMessage("bogus", {"role": "user", "content": "x"})  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            store.add_messages(thread.thread_id, batch)
        assert store.count_messages(thread.thread_id) == 1
        assert seqs(store.get_messages(thread.thread_id)) == [1]
        assert seqs(store.add_messages(thread.thread_id, [user("after")])) == [2]

    def test_content_that_is_not_json_is_refused_whole(self, store: Store) -> None:
        thread = store.create_thread()
        batch = [user("ok"), NewMessage("user", {"role": "user", "content": object()})]
        with pytest.raises(StoreError, match="message 1"):
            store.add_messages(thread.thread_id, batch)
        assert store.count_messages(thread.thread_id) == 0

    def test_get_messages_last_after_seq_and_llm_only(self, store: Store) -> None:
        thread = store.create_thread()
        batch = []
        for i in range(1, 31):
            if i % 5 == 0:
                batch.append(NewMessage("status", {"text": f"s{i}"}, is_llm_message=False))
            else:
                batch.append(user(f"m{i}"))
        store.add_messages(thread.thread_id, batch)
        tid = thread.thread_id
        llm = [i for i in range(1, 31) if i % 5]
        assert seqs(store.get_messages(tid, last=4)) == [27, 28, 29, 30]
        assert seqs(store.get_messages(tid, last=100)) == list(range(1, 31))
        assert store.get_messages(tid, last=0) == []
        assert seqs(store.get_messages(tid, after_seq=26)) == [27, 28, 29, 30]
        assert store.get_messages(tid, after_seq=30) == []
        assert seqs(store.get_messages(tid, llm_only=True)) == llm
        assert seqs(store.get_messages(tid, last=5, llm_only=True)) == llm[-5:]
        assert seqs(store.get_messages(tid, last=3, after_seq=10)) == [28, 29, 30]
        assert seqs(store.get_messages(tid, last=50, after_seq=20)) == list(range(21, 31))
        assert seqs(store.get_messages(tid, last=10, after_seq=20, llm_only=True)) == [
            i for i in llm if i > 20]

    def test_llm_only_last_reaches_past_many_status_notes(self, store: Store) -> None:
        thread = store.create_thread()
        store.add_messages(thread.thread_id, [user("early-1"), user("early-2")])
        store.add_messages(thread.thread_id, [
            NewMessage("status", {"text": f"s{i}"}, is_llm_message=False) for i in range(50)])
        assert seqs(store.get_messages(thread.thread_id, last=2, llm_only=True)) == [1, 2]

    def test_unknown_message_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="message"):
            store.get_message("nope")

    def test_concurrent_appends_from_threads_keep_seqs_gapless(self, store: Store) -> None:
        thread = store.create_thread()
        errors: list[BaseException] = []

        def append(worker: int) -> None:
            try:
                for i in range(15):
                    store.add_messages(thread.thread_id, [user(f"{worker}-{i}")])
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        workers = [threading.Thread(target=append, args=(w,)) for w in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        assert seqs(store.get_messages(thread.thread_id)) == list(range(1, 91))

    # ------------------------------------------------------------------ runs

    def test_run_lifecycle(self, store: Store) -> None:
        thread = store.create_thread()
        agent = store.create_agent(AgentConfig(name="a"))
        run = store.create_run(thread.thread_id, model="gpt-x", agent_id=agent.agent_id,
                               metadata={"prompt": "hi"})
        assert (run.status, run.model, run.agent_id, run.metadata) == (
            "queued", "gpt-x", agent.agent_id, {"prompt": "hi"})
        assert run.started_at is None and run.finished_at is None and run.cost == 0.0
        assert_utc(run.created_at)
        assert store.get_run(run.run_id) == run

        running = store.update_run(run.run_id, status="running", owner="host:1:2", started=True)
        assert running.status == "running" and running.owner == "host:1:2"
        assert_utc(running.started_at)
        assert running.finished_at is None

        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        done = store.update_run(run.run_id, status="failed", error="boom", usage=usage,
                                cost=0.25, finished=True)
        assert (done.status, done.error, done.usage, done.cost) == ("failed", "boom", usage, 0.25)
        assert done.started_at == running.started_at and done.owner == "host:1:2"
        assert done.finished_at is not None and running.started_at is not None
        assert done.finished_at >= running.started_at
        assert store.get_run(run.run_id) == done
        assert store.update_run(run.run_id) == done

    def test_run_can_start_in_a_given_status(self, store: Store) -> None:
        thread = store.create_thread()
        assert store.create_run(thread.thread_id, model="m", status="running").status == "running"

    def test_an_unknown_run_status_is_refused(self, store: Store) -> None:
        thread = store.create_thread()
        with pytest.raises(StoreError, match="status"):
            store.create_run(thread.thread_id, model="m", status="exploded")
        run = store.create_run(thread.thread_id, model="m")
        with pytest.raises(StoreError, match="status"):
            store.update_run(run.run_id, status="exploded")
        assert store.list_runs() == [run]

    def test_unknown_run_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="run"):
            store.get_run("nope")
        with pytest.raises(NotFound, match="run"):
            store.update_run("nope", status="running")

    def test_list_runs_filters_oldest_first(self, store: Store) -> None:
        a, b = store.create_thread(), store.create_thread()
        r1 = store.create_run(a.thread_id, model="m")
        r2 = store.create_run(b.thread_id, model="m")
        r3 = store.create_run(a.thread_id, model="m")
        store.update_run(r2.run_id, status="running")
        r3 = store.update_run(r3.run_id, status="completed")
        r2 = store.get_run(r2.run_id)
        assert store.list_runs() == [r1, r2, r3]
        assert store.list_runs(thread_id=a.thread_id) == [r1, r3]
        assert store.list_runs(statuses=["queued", "running"]) == [r1, r2]
        assert store.list_runs(thread_id=a.thread_id, statuses=["completed"]) == [r3]
        assert store.list_runs(statuses=[]) == []

    # -- begin_run: RunManager.start_run's one store operation

    def test_begin_run_creates_the_run_and_stores_the_message_in_one_go(
            self, store: Store) -> None:
        thread = store.create_thread()
        store.add_messages(thread.thread_id, [user("earlier")])
        start = store.begin_run(thread.thread_id, model="m", agent_id=None, owner="host:1:2",
                                metadata={"max_iterations": 3}, message=user("go"))
        assert start.busy == [] and start.run is not None and start.message is not None
        assert start.thread == store.get_thread(thread.thread_id)
        run = store.get_run(start.run.run_id)
        assert run == start.run
        assert (run.status, run.owner, run.metadata) == (
            "queued", "host:1:2", {"max_iterations": 3})
        assert_utc(run.created_at)
        assert start.message.seq == 2 and start.message.run_id == run.run_id
        assert store.get_messages(thread.thread_id)[-1] == start.message
        assert store.list_runs(thread_id=thread.thread_id,
                               statuses=["queued", "running"]) == [run]

    def test_begin_run_without_a_message_stores_none(self, store: Store) -> None:
        thread = store.create_thread()
        start = store.begin_run(thread.thread_id, model="m")
        assert start.run is not None and start.message is None and start.run.owner is None
        assert store.get_messages(thread.thread_id) == []
        assert store.get_run(start.run.run_id) == start.run

    def test_begin_run_leaves_a_busy_thread_alone_unless_told_to_ignore_its_runs(
            self, store: Store) -> None:
        thread = store.create_thread()
        first = store.begin_run(thread.thread_id, model="m", message=user("one")).run
        assert first is not None
        second = store.begin_run(thread.thread_id, model="m", message=user("two"))
        assert second.run is None and second.message is None and second.busy == [first]
        assert [m.content["content"] for m in store.get_messages(thread.thread_id)] == ["one"]
        third = store.begin_run(thread.thread_id, model="m", message=user("three"),
                                ignore=[first.run_id])
        assert third.run is not None and third.busy == []
        with pytest.raises(NotFound, match="thread"):
            store.begin_run("nope", model="m")

    def test_begin_run_goes_past_a_dead_run_it_is_told_to_ignore(self, store: Store) -> None:
        thread = store.create_thread()
        dead = store.create_run(thread.thread_id, model="m")
        dead = store.update_run(dead.run_id, status="running", owner="gone:1:1", started=True)
        live = store.create_run(store.create_thread().thread_id, model="m")  # another thread
        refused = store.begin_run(thread.thread_id, model="m", owner="host:1:2",
                                  message=user("go"))
        assert refused.run is None and refused.busy == [dead]
        assert store.get_messages(thread.thread_id) == []
        start = store.begin_run(thread.thread_id, model="m", owner="host:1:2",
                                message=user("go"), ignore=[dead.run_id, live.run_id])
        assert start.run is not None and start.busy == [] and start.message is not None
        assert [m.seq for m in store.get_messages(thread.thread_id)] == [1]
        assert store.list_runs(thread_id=thread.thread_id,
                               statuses=["queued", "running"]) == [dead, start.run]
        again = store.begin_run(thread.thread_id, model="m", ignore=[dead.run_id])
        assert again.run is None and again.busy == [start.run]  # ignore is not a pass

    def test_a_finished_run_does_not_keep_a_thread_busy(self, store: Store) -> None:
        thread = store.create_thread()
        first = store.begin_run(thread.thread_id, model="m").run
        assert first is not None
        store.update_run(first.run_id, status="completed", finished=True)
        assert store.begin_run(thread.thread_id, model="m").run is not None

    def test_begin_run_is_all_or_nothing(self, store: Store) -> None:
        thread = store.create_thread()
        with pytest.raises(StoreError):
            store.begin_run(thread.thread_id, model="m",
                            message=NewMessage("bogus", {"content": "x"}))  # type: ignore[arg-type]
        assert store.list_runs() == [] and store.get_messages(thread.thread_id) == []
        assert store.begin_run(thread.thread_id, model="m").run is not None

    def test_concurrent_begin_runs_on_one_thread_create_exactly_one_run(
            self, store: Store) -> None:
        # Several rounds: the first may be serialised by connections being opened.
        for _ in range(4):
            self._race_begin_runs(store)

    def _race_begin_runs(self, store: Store) -> None:
        thread, other = store.create_thread(), store.create_thread()
        n = 8
        barrier = threading.Barrier(n)
        results: list[RunStart | BaseException | None] = [None] * n

        def start(i: int) -> None:
            try:
                barrier.wait(10)
                target = thread if i < 6 else other
                results[i] = store.begin_run(target.thread_id, model="m",
                                             message=user(str(i)))
            except BaseException as exc:  # surfaced by the assertions below
                results[i] = exc

        workers = [threading.Thread(target=start, args=(i,)) for i in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        ours = [r for r in results[:6] if isinstance(r, RunStart)]
        assert len(ours) == 6, results
        started = [r for r in ours if r.run is not None]
        assert len(started) == 1, [r.run for r in started]
        run, message = started[0].run, started[0].message
        assert run is not None and message is not None
        assert all(r.busy == [run] and r.message is None for r in ours if r.run is None)
        assert store.list_runs(thread_id=thread.thread_id) == [run]
        assert [m.message_id for m in store.get_messages(thread.thread_id)] == [
            message.message_id]
        # Two starts on another thread meanwhile: one of them creates its run.
        theirs = results[6:]
        assert sum(isinstance(r, RunStart) and r.run is not None for r in theirs) == 1, theirs
        assert len(store.list_runs(thread_id=other.thread_id)) == 1

    # ------------------------------------------------------------------ agents

    def test_agent_round_trip(self, store: Store) -> None:
        config = AgentConfig(
            name="analyst", system_prompt="You analyse.", model="anthropic/claude",
            configured_mcps=[{"name": "fs", "config": {"root": "/data"}}],
            custom_mcps=[{"name": "web", "type": "http", "url": "http://x"}],
            agentpress_tools={"shell": True, "files": {"enabled": False}})
        agent = store.create_agent(config)
        assert agent.version_number == 1 and agent.config == config
        assert_utc(agent.created_at)
        assert store.get_agent(agent.agent_id) == agent
        assert store.list_agents() == [agent]

    def test_update_agent_makes_a_new_version_and_keeps_the_old(self, store: Store) -> None:
        v1 = store.create_agent(AgentConfig(name="a", system_prompt="one"))
        v2 = store.update_agent(v1.agent_id, AgentConfig(name="a", system_prompt="two"))
        v3 = store.update_agent(v1.agent_id, AgentConfig(name="b", system_prompt="three"))
        assert [v.version_number for v in (v1, v2, v3)] == [1, 2, 3]
        assert len({v1.version_id, v2.version_id, v3.version_id}) == 3
        assert v3.current_version_id == v3.version_id
        assert v3.agent_id == v1.agent_id and v3.created_at == v1.created_at
        assert v3.updated_at > v1.updated_at
        current = store.get_agent(v1.agent_id)
        assert current == v3 and current.config.system_prompt == "three"
        old = store.get_agent(v1.agent_id, version_id=v1.version_id)
        assert old.version_number == 1 and old.config.system_prompt == "one"
        assert old.version_id == v1.version_id and old.current_version_id == v3.version_id
        assert [v.version_number for v in store.list_agent_versions(v1.agent_id)] == [1, 2, 3]
        assert [v.config.system_prompt for v in store.list_agent_versions(v1.agent_id)] == [
            "one", "two", "three"]
        assert store.list_agents() == [v3]

    def test_a_version_of_another_agent_is_not_found(self, store: Store) -> None:
        a = store.create_agent(AgentConfig(name="a"))
        b = store.create_agent(AgentConfig(name="b"))
        with pytest.raises(NotFound):
            store.get_agent(a.agent_id, version_id=b.version_id)
        with pytest.raises(NotFound):
            store.get_agent(a.agent_id, version_id="nope")

    def test_find_agent_by_id_then_most_recently_updated_name(self, store: Store) -> None:
        older = store.create_agent(AgentConfig(name="helper"))
        newer = store.create_agent(AgentConfig(name="helper"))
        found = store.find_agent("helper")
        assert found is not None and found.agent_id == newer.agent_id
        store.update_agent(older.agent_id, AgentConfig(name="helper", system_prompt="v2"))
        found = store.find_agent("helper")
        assert found is not None and found.agent_id == older.agent_id
        assert found.version_number == 2
        by_id = store.find_agent(newer.agent_id)
        assert by_id is not None and by_id.agent_id == newer.agent_id
        # A renamed agent is found by its current name only.
        store.update_agent(newer.agent_id, AgentConfig(name="renamed"))
        found = store.find_agent("renamed")
        assert found is not None and found.agent_id == newer.agent_id
        assert store.find_agent("nobody") is None

    def test_delete_agent(self, store: Store) -> None:
        agent = store.create_agent(AgentConfig(name="a"))
        store.update_agent(agent.agent_id, AgentConfig(name="a2"))
        kept = store.create_agent(AgentConfig(name="k"))
        store.delete_agent(agent.agent_id)
        for call in (lambda: store.get_agent(agent.agent_id),
                     lambda: store.list_agent_versions(agent.agent_id),
                     lambda: store.update_agent(agent.agent_id, AgentConfig(name="x")),
                     lambda: store.delete_agent(agent.agent_id)):
            with pytest.raises(NotFound, match="agent"):
                call()
        assert store.find_agent("a2") is None
        assert store.list_agents() == [kept]

    # ------------------------------------------------------------------ frames

    def test_thread_frame(self, store: Store) -> None:
        thread = store.create_thread()
        run = store.create_run(thread.thread_id, model="m")
        stored = store.add_messages(thread.thread_id, [
            user("question"),
            NewMessage("assistant", {"role": "assistant", "content": [
                {"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
                run_id=run.run_id),
            NewMessage("assistant", {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function",
                 "function": {"name": "execute_command", "arguments": "{}"}}]}),
            NewMessage("status", {"text": "sandbox ready"}, is_llm_message=False),
        ])
        frame = store.thread_frame(thread.thread_id)
        assert list(frame.columns) == ["seq", "type", "role", "text", "created_at", "run_id",
                                       "message_id"]
        assert frame["seq"].tolist() == [1, 2, 3, 4]
        assert frame["type"].tolist() == ["user", "assistant", "assistant", "status"]
        assert frame["role"].tolist()[:3] == ["user", "assistant", "assistant"]
        texts = frame["text"].tolist()
        assert texts[0] == "question" and texts[1] == "part one\npart two"
        assert "execute_command" in texts[2] and texts[3] == "sandbox ready"
        assert frame["run_id"].tolist()[1] == run.run_id
        assert frame["message_id"].tolist() == [m.message_id for m in stored]
        assert str(frame["created_at"].dt.tz) == "UTC"

    def test_runs_frame(self, store: Store) -> None:
        thread = store.create_thread()
        done = store.create_run(thread.thread_id, model="m1")
        store.update_run(done.run_id, status="running", started=True)
        store.update_run(done.run_id, status="completed", finished=True, cost=0.5,
                         usage={"prompt_tokens": 7, "completion_tokens": 3})
        store.create_run(thread.thread_id, model="m2")
        frame = store.runs_frame()
        for column in ("run_id", "thread_id", "status", "model", "created_at", "started_at",
                       "finished_at", "duration_s", "prompt_tokens", "completion_tokens",
                       "total_tokens", "cost", "error"):
            assert column in frame.columns
        assert frame["run_id"].tolist()[0] == done.run_id
        assert frame["status"].tolist() == ["completed", "queued"]
        assert frame["prompt_tokens"].tolist() == [7, 0]
        assert frame["total_tokens"].tolist() == [10, 0]
        assert frame["cost"].tolist() == [0.5, 0.0]
        assert frame["duration_s"].iloc[0] >= 0
        assert frame["duration_s"].isna().tolist() == [False, True]

    def test_threads_frame(self, store: Store) -> None:
        busy = store.create_thread(name="busy")
        idle = store.create_thread(name="idle")
        store.add_messages(busy.thread_id, [user("a"), assistant("b")])
        store.add_messages(busy.thread_id, [user("c")])
        run = store.create_run(busy.thread_id, model="m")
        store.update_run(run.run_id, cost=0.125)
        store.update_run(store.create_run(busy.thread_id, model="m").run_id, cost=0.25)
        frame = store.threads_frame()
        assert list(frame.columns) == ["thread_id", "name", "project_id", "created_at",
                                       "updated_at", "messages", "runs", "cost"]
        assert frame["thread_id"].tolist() == [busy.thread_id, idle.thread_id]
        assert frame["messages"].tolist() == [3, 0]
        assert frame["runs"].tolist() == [2, 0]
        assert frame["cost"].tolist() == [0.375, 0.0]

    def test_frames_of_an_empty_store_have_their_columns(self, store: Store) -> None:
        assert len(store.runs_frame()) == 0 and "duration_s" in store.runs_frame().columns
        assert len(store.threads_frame()) == 0 and "messages" in store.threads_frame().columns
        thread = store.create_thread()
        frame = store.thread_frame(thread.thread_id)
        assert len(frame) == 0 and "text" in frame.columns

    # ------------------------------------------------------------------ lifecycle

    def test_close_is_idempotent(self, store: Store) -> None:
        store.create_thread()
        store.close()
        store.close()
