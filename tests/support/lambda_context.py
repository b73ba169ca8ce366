"""The fields of Lambda's context object that Powertools reads, for calling handlers in-process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LambdaContext:
    function_name: str = "hatchway-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:hatchway"
    aws_request_id: str = "6f2c0b1e-0000-4000-8000-000000000001"
    remaining_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
