"""Reads the Cloudflare API token from AWS, and keeps it out of every log, repr and error.

Where the token is read from depends on the configured source:

- ``ssm:<name>`` or a name starting with ``/`` (or an SSM parameter ARN) is an SSM parameter,
  read with decryption (a SecureString);
- anything else is a Secrets Manager secret name or ARN.

The value is either the bare token or a JSON object holding it under ``token`` or ``api_token``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from .cert_errors import TokenUnavailable

SSM_PREFIX: Final = "ssm:"
TOKEN_KEYS: Final = ("token", "api_token")
"""Keys a JSON secret may hold the token under, in order of preference."""


RESPONSE_LOGGERS: Final = ("botocore.parsers", "botocore.endpoint")
"""botocore's loggers that dump whole requests and responses at DEBUG level."""

_reading = threading.local()


class _WhileReadingSecrets(logging.Filter):
    """Drops botocore's request/response dumps in the thread that is reading a secret.

    At DEBUG level botocore logs every response body before anyone parses it, so the token
    would reach the logs before it could be redacted; the record is dropped instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_reading, "active", False)


_FILTER = _WhileReadingSecrets()
for _name in RESPONSE_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


@contextmanager
def _unlogged() -> Iterator[None]:
    _reading.active = True
    try:
        yield
    finally:
        _reading.active = False


class ApiToken:
    """A secret string that never shows itself: ``repr``/``str`` are masked; use ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value or value != value.strip() or any(c.isspace() for c in value):
            raise TokenUnavailable("the Cloudflare API token is empty or contains whitespace")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the token masked."""
        return text.replace(self._value, "********")

    def __repr__(self) -> str:
        return "ApiToken('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiToken) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def is_ssm_source(source: str) -> bool:
    return source.startswith(("/", SSM_PREFIX)) or source.startswith("arn:aws:ssm:")


def read_cloudflare_token(source: str, *, secretsmanager: Any = None, ssm: Any = None) -> ApiToken:
    """The token held by ``source`` (see the module docstring for the rule).

    ``secretsmanager`` and ``ssm`` are boto3 clients; only the one the source needs is used.
    """
    if not source:
        raise TokenUnavailable("no Cloudflare API token source configured")
    try:
        with _unlogged():
            raw = _read_raw(source, secretsmanager=secretsmanager, ssm=ssm)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "unknown")
        # The AWS error text names the resource, never its value: still, only the code is kept.
        raise TokenUnavailable(
            f"cannot read the Cloudflare API token from {source} ({code}): check the name and "
            "that the function's role may read it"
        ) from None
    except BotoCoreError as error:
        raise TokenUnavailable(
            f"cannot read the Cloudflare API token from {source} ({type(error).__name__})"
        ) from None
    return ApiToken(_token_from_value(raw, source))


def _read_raw(source: str, *, secretsmanager: Any, ssm: Any) -> str:
    if is_ssm_source(source):
        name = source.removeprefix(SSM_PREFIX)
        if ssm is None:
            raise TokenUnavailable(f"no SSM client to read parameter {name}")
        response = ssm.get_parameter(Name=name, WithDecryption=True)
        return str(response["Parameter"]["Value"])
    if secretsmanager is None:
        raise TokenUnavailable(f"no Secrets Manager client to read secret {source}")
    response = secretsmanager.get_secret_value(SecretId=source)
    if "SecretString" not in response:
        raise TokenUnavailable(f"secret {source} holds binary data, not a token string")
    return str(response["SecretString"])


def _token_from_value(raw: str, source: str) -> str:
    text = raw.strip()
    if not text.startswith("{"):
        return text
    try:
        document = json.loads(text)
    except ValueError:
        raise TokenUnavailable(f"{source} looks like JSON but does not parse") from None
    if isinstance(document, dict):
        for key in TOKEN_KEYS:
            value = document.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    raise TokenUnavailable(
        f"{source} is a JSON object without a {' or '.join(TOKEN_KEYS)} string key"
    )
