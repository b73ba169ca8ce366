"""The relay's per-tunnel guards, specified as pure functions: basic auth against the agent's
salted hash, and GitHub, Stripe and Slack webhook signatures (with the timestamp tolerance)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from hatchway import protocol
from hatchway_relay import guards
from hatchway_relay.guards import WEBHOOK_TOLERANCE_SECONDS, Refusal
from hatchway_relay.ports import Claim

NOW = 1_700_000_000.0
SECRET = "whsec_s3cr3t-signing-key"
BODY = b'{"action":"opened","number":7}'
PASSWORD_HASH = protocol.hash_basic_auth("alice:correct horse", b"0123456789abcdef")


def basic(credentials: str) -> tuple[str, str]:
    return ("authorization", "Basic " + base64.b64encode(credentials.encode()).decode())


def hex_hmac(message: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def github(body: bytes = BODY, secret: str = SECRET) -> tuple[str, str]:
    return ("x-hub-signature-256", "sha256=" + hex_hmac(body, secret))


def stripe(ts: float = NOW, body: bytes = BODY, secret: str = SECRET) -> tuple[str, str]:
    stamp = str(int(ts))
    return ("stripe-signature", f"t={stamp},v1={hex_hmac(stamp.encode() + b'.' + body, secret)}")


def slack(ts: float = NOW, body: bytes = BODY, secret: str = SECRET) -> list[tuple[str, str]]:
    stamp = str(int(ts))
    signature = "v0=" + hex_hmac(b"v0:" + stamp.encode() + b":" + body, secret)
    return [("x-slack-request-timestamp", stamp), ("x-slack-signature", signature)]


def claim(basic_auth: str = "", webhook: str = "") -> Claim:
    return Claim(
        "myapp",
        "c1",
        "t1",
        NOW + 600,
        basic_auth=basic_auth,
        webhook=webhook,
        webhook_secret=SECRET if webhook else "",
    )


def outcome(refusal: Refusal | None) -> tuple[int, str] | None:
    return None if refusal is None else (refusal.status, refusal.code)


UNSIGNED = (401, "webhook-unsigned")
FORGED = (403, "webhook-bad-signature")
STALE = (403, "webhook-stale")
AUTH = (401, "auth-required")


def test_a_tunnel_without_guards_lets_everything_through() -> None:
    assert guards.check(claim(), (), b"", NOW) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([basic("alice:correct horse")], None, id="right credentials"),
        pytest.param([("Authorization", basic("alice:correct horse")[1])], None, id="any case"),
        pytest.param([], AUTH, id="no credentials"),
        pytest.param([basic("alice:wrong")], AUTH, id="wrong password"),
        pytest.param([basic("mallory:correct horse")], AUTH, id="wrong user"),
        pytest.param([basic("alice:correct horse ")], AUTH, id="one character more"),
        pytest.param([("authorization", "Bearer abc")], AUTH, id="another scheme"),
        pytest.param([("authorization", "Basic !!notbase64")], AUTH, id="broken base64"),
        pytest.param([("authorization", "Basic " + "QQ==" * 400)], AUTH, id="oversized header"),
        pytest.param([basic("alicecorrect horse")], AUTH, id="no colon"),
    ],
)
def test_basic_auth(headers: list[tuple[str, str]], expected: tuple[int, str] | None) -> None:
    refusal = guards.check(claim(basic_auth=PASSWORD_HASH), tuple(headers), b"", NOW)
    assert outcome(refusal) == expected
    if refusal is not None:
        challenge = guards.BASIC_CHALLENGE.format(tunnel="myapp")
        assert ("www-authenticate", challenge) in refusal.headers
        assert "correct horse" not in refusal.message


def test_a_broken_stored_hash_refuses_everyone() -> None:
    refusal = guards.check(claim(basic_auth="pbkdf2-sha256$x"), (basic("a:b"),), b"", NOW)
    assert outcome(refusal) == AUTH


def test_the_tunnels_credentials_are_not_forwarded_but_other_headers_are() -> None:
    headers = (basic("alice:correct horse"), ("x-keep", "1"))
    assert guards.forwarded_headers(claim(basic_auth=PASSWORD_HASH), headers) == (("x-keep", "1"),)
    assert guards.forwarded_headers(claim(), headers) == headers  # no guard: untouched


@pytest.mark.parametrize(
    ("provider", "headers", "body", "expected"),
    [
        # GitHub: X-Hub-Signature-256 over the raw body
        pytest.param("github", [github()], BODY, None, id="github signed"),
        pytest.param("github", [], BODY, UNSIGNED, id="github unsigned"),
        pytest.param("github", [github()], BODY + b" ", FORGED, id="github body changed"),
        pytest.param("github", [github(secret="other")], BODY, FORGED, id="github other secret"),
        pytest.param(
            "github",
            [("x-hub-signature-256", "sha1=" + hex_hmac(BODY))],
            BODY,
            FORGED,
            id="github wrong scheme",
        ),
        pytest.param(
            "github",
            [("X-Hub-Signature-256", github()[1].upper().replace("SHA256", "sha256"))],
            BODY,
            None,
            id="github upper-case hex, any header case",
        ),
        pytest.param(
            "github", [("x-hub-signature-256", "sha256=é")], BODY, FORGED, id="github non-ascii"
        ),
        # Stripe: t=...,v1=... over "t.body", within the tolerance
        pytest.param("stripe", [stripe()], BODY, None, id="stripe signed"),
        pytest.param("stripe", [], BODY, UNSIGNED, id="stripe unsigned"),
        pytest.param("stripe", [stripe(secret="other")], BODY, FORGED, id="stripe other secret"),
        pytest.param("stripe", [stripe()], b"{}", FORGED, id="stripe body changed"),
        pytest.param(
            "stripe",
            [stripe(NOW - WEBHOOK_TOLERANCE_SECONDS)],
            BODY,
            None,
            id="stripe at the tolerance",
        ),
        pytest.param(
            "stripe",
            [stripe(NOW - WEBHOOK_TOLERANCE_SECONDS - 1)],
            BODY,
            STALE,
            id="stripe stale",
        ),
        pytest.param(
            "stripe",
            [stripe(NOW + WEBHOOK_TOLERANCE_SECONDS + 1)],
            BODY,
            STALE,
            id="stripe from the future",
        ),
        pytest.param(
            "stripe",
            [("stripe-signature", f"t={int(NOW)},v1={'0' * 64},{stripe()[1].split(',')[1]}")],
            BODY,
            None,
            id="stripe second signature matches (secret being rolled)",
        ),
        pytest.param(
            "stripe",
            [("stripe-signature", stripe()[1].split(",")[1])],
            BODY,
            FORGED,
            id="stripe without t",
        ),
        pytest.param(
            "stripe",
            [("stripe-signature", f"t={int(NOW)},v0={hex_hmac(BODY)}")],
            BODY,
            FORGED,
            id="stripe without v1",
        ),
        pytest.param(
            "stripe",
            [("stripe-signature", f"t=yesterday,v1={'0' * 64}")],
            BODY,
            FORGED,
            id="stripe timestamp not a number",
        ),
        pytest.param(
            "stripe",
            [("stripe-signature", stripe()[1] + ",v1=" + "0" * guards.MAX_SIGNATURE_HEADER_LENGTH)],
            BODY,
            FORGED,
            id="stripe oversized header",
        ),
        # Slack: v0 over "v0:ts:body" with X-Slack-Request-Timestamp, within the tolerance
        pytest.param("slack", slack(), BODY, None, id="slack signed"),
        pytest.param("slack", [], BODY, UNSIGNED, id="slack unsigned"),
        pytest.param("slack", slack()[1:], BODY, UNSIGNED, id="slack without timestamp"),
        pytest.param("slack", slack(secret="other"), BODY, FORGED, id="slack other secret"),
        pytest.param(
            "slack",
            slack(NOW - WEBHOOK_TOLERANCE_SECONDS - 1),
            BODY,
            STALE,
            id="slack stale",
        ),
        pytest.param(
            "slack",
            [slack()[0], ("x-slack-signature", "v1=" + slack()[1][1][3:])],
            BODY,
            FORGED,
            id="slack wrong version",
        ),
        pytest.param(
            "slack",
            [("x-slack-request-timestamp", "9" * 5000), slack()[1]],
            BODY,
            FORGED,
            id="slack absurd timestamp",
        ),
    ],
)
def test_webhook_signatures(
    provider: str,
    headers: list[tuple[str, str]],
    body: bytes,
    expected: tuple[int, str] | None,
) -> None:
    refusal = guards.check(claim(webhook=provider), tuple(headers), body, NOW)
    assert outcome(refusal) == expected
    if refusal is not None:
        assert (
            "relay refused" in refusal.message and "never reached the local app" in refusal.message
        )
        assert SECRET not in refusal.message


def test_an_unknown_provider_fails_closed() -> None:
    refusal = guards.check(claim(webhook="gitlab"), (github(),), BODY, NOW)
    assert outcome(refusal) == FORGED


def test_basic_auth_and_a_webhook_check_both_apply() -> None:
    both = Claim(
        "myapp", "c1", "t1", NOW + 600, basic_auth=PASSWORD_HASH, webhook="github",
        webhook_secret=SECRET,
    )  # fmt: skip
    assert outcome(guards.check(both, (github(),), BODY, NOW)) == AUTH
    assert outcome(guards.check(both, (basic("alice:correct horse"),), BODY, NOW)) == UNSIGNED
    assert guards.check(both, (basic("alice:correct horse"), github()), BODY, NOW) is None


def test_secrets_stay_out_of_the_claims_repr() -> None:
    text = repr(claim(basic_auth=PASSWORD_HASH, webhook="github"))
    assert SECRET not in text and PASSWORD_HASH not in text
