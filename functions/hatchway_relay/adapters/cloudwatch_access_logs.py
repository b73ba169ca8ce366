"""The stack's access logs read from CloudWatch Logs with ``FilterLogEvents``: the visitors'
group or the agents' one, narrowed by a filter pattern, then chosen by ``access_logs.select``."""

from __future__ import annotations

from typing import Any

from hatchway_relay.access_logs import LogQuery, Routing, filter_pattern, select

PAGE_EVENTS = 10_000
"""Events one ``FilterLogEvents`` call returns at most (its own limit)."""


class CloudWatchAccessLogs:
    """``read(query)``: the entries of the stack's access log groups that ``query`` wants."""

    def __init__(self, client: Any, visitor_group: str, agent_group: str, routing: Routing):
        self.client = client
        self.visitor_group = visitor_group
        self.agent_group = agent_group
        self.routing = routing

    def read(self, query: LogQuery, now: float) -> list[dict[str, str]]:
        group = self.agent_group if query.agents else self.visitor_group
        request: dict[str, Any] = {
            "logGroupName": group,
            "startTime": int(query.since * 1000),
            "endTime": int(now * 1000),
            "limit": PAGE_EVENTS,
        }
        pattern = filter_pattern(query, self.routing)
        if pattern:
            request["filterPattern"] = pattern
        messages: list[str] = []
        # Every page is read: CloudWatch returns the oldest first, and the latest are wanted.
        for page in self.client.get_paginator("filter_log_events").paginate(**request):
            messages.extend(event["message"] for event in page.get("events", []))
        return select(messages, query, self.routing)
