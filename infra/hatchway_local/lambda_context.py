"""``InvocationContext``: the Lambda context object the local gateway hands each handler, whose
``get_remaining_time_in_millis()`` counts down the function's timeout from the invocation's
start, as Lambda's does."""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field

MEMORY_LIMIT_MB = 512
"""What the context reports as the function's memory (the template's ``MemorySize``)."""

ARN_PREFIX = "arn:aws:lambda:local:000000000000:function:"


@dataclass(frozen=True)
class InvocationContext:
    """The fields handlers and Powertools read from Lambda's context."""

    function_name: str
    timeout: float
    """The function's configured timeout in seconds (the template's ``Timeout``)."""
    started: float = field(default_factory=time.monotonic)
    memory_limit_in_mb: int = MEMORY_LIMIT_MB

    @functools.cached_property
    def aws_request_id(self) -> str:
        """A version 4 UUID, made when first read: the relay's handlers never read it, and
        every invocation makes a context."""
        return str(uuid.uuid4())

    @property
    def invoked_function_arn(self) -> str:
        return ARN_PREFIX + self.function_name

    def get_remaining_time_in_millis(self) -> int:
        left = self.started + self.timeout - time.monotonic()
        return max(0, int(left * 1000))
