"""Tool specs are built once per function and handed out as independent copies."""

from __future__ import annotations

import pytest

from kortix_lab.agentpress.tool import Tool, function, spec_from_callable


class Counter(Tool):
    def __init__(self, start: int) -> None:
        self.start = start

    @function
    async def add(self, amount: int) -> str:
        """Add to the counter.

        Args:
            amount: how much to add
        """
        return str(self.start + amount)


@pytest.mark.asyncio
async def test_specs_of_one_method_on_two_instances_call_their_own_instance() -> None:
    first, second = Counter(1).specs()[0], Counter(100).specs()[0]
    assert first.parameters == second.parameters
    assert first.parameters["properties"]["amount"]["description"] == "how much to add"
    assert await first.handler(amount=1) == "2"
    assert await second.handler(amount=1) == "101"


def test_a_spec_schema_is_its_own_copy() -> None:
    """A registry may edit a spec's schema (MCP, approvals); the next run must not see it."""
    spec = Counter(0).specs()[0]
    spec.parameters["properties"]["amount"]["description"] = "changed"
    again = spec_from_callable(Counter(0).add)
    assert again.parameters["properties"]["amount"]["description"] == "how much to add"
