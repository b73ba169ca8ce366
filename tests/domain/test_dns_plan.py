"""The DNS job's decisions without any I/O: which records a stack wants, and which changes bring
a zone there while every record the stack does not own stays as it is."""

from __future__ import annotations

import pytest

from hatchway_domain.dns_plan import (
    MAX_COMMENT_CHARS,
    Create,
    Delete,
    DesiredRecord,
    PlanError,
    StackLayout,
    Update,
    ValidationRecord,
    ZoneRecord,
    desired_records,
    outside_zone,
    ownership_marker,
    plan_changes,
)

DOMAIN = "t.example.test"
HTTP_TARGET = "d-abc123.execute-api.eu-west-1.amazonaws.com"
CONNECT_TARGET = "d-ws456.execute-api.eu-west-1.amazonaws.com"
MARKER = ownership_marker("hatchway-test")
VALIDATION_NAME = "_d930b28be6c5927595552b219965053e.t.example.test."
VALIDATION_VALUE = "_c9edd76ee4a0e2a74388032f3861cc50.ykybfrwcxw.acm-validations.aws."

WILDCARD = DesiredRecord(f"*.{DOMAIN}", "CNAME", HTTP_TARGET)
CONNECT = DesiredRecord(f"connect.{DOMAIN}", "CNAME", CONNECT_TARGET)


def zone_record(
    name: str,
    content: str,
    *,
    type: str = "CNAME",
    comment: str | None = MARKER,
    ttl: int = 1,
    proxied: bool = False,
    id: str | None = None,
) -> ZoneRecord:
    return ZoneRecord(
        id=id or f"id-{name}-{type}-{content}",
        name=name,
        type=type,
        content=content,
        ttl=ttl,
        proxied=proxied,
        comment=comment,
    )


def test_desired_records_cover_tunnels_agents_validation_and_custom_hostnames() -> None:
    layout = StackLayout(
        domain="T.Example.Test.",
        http_target=HTTP_TARGET + ".",
        connect_target=CONNECT_TARGET,
        validation=(
            ValidationRecord(VALIDATION_NAME, "CNAME", VALIDATION_VALUE, f"*.{DOMAIN}"),
            ValidationRecord(VALIDATION_NAME, "CNAME", VALIDATION_VALUE, DOMAIN),
        ),
        custom_hostnames={"api.example.test": "d-custom.execute-api.eu-west-1.amazonaws.com"},
    )

    records = desired_records(layout)

    assert [(r.type, r.name, r.content) for r in records] == [
        ("CNAME", "*.t.example.test", HTTP_TARGET),
        ("CNAME", "_d930b28be6c5927595552b219965053e.t.example.test", VALIDATION_VALUE[:-1]),
        ("CNAME", "api.example.test", "d-custom.execute-api.eu-west-1.amazonaws.com"),
        ("CNAME", "connect.t.example.test", CONNECT_TARGET),
    ]


def test_without_a_websocket_domain_only_the_wildcard_is_wanted() -> None:
    assert desired_records(StackLayout(DOMAIN, HTTP_TARGET)) == (WILDCARD,)


def test_before_the_custom_domains_exist_only_validation_is_wanted() -> None:
    validation = ValidationRecord(VALIDATION_NAME, "CNAME", VALIDATION_VALUE, f"*.{DOMAIN}")

    records = desired_records(StackLayout(DOMAIN, validation=(validation,)))

    assert [r.name for r in records] == [VALIDATION_NAME.rstrip(".")]


@pytest.mark.parametrize(
    ("layout", "complaint"),
    [
        (StackLayout("*.t.example.test", HTTP_TARGET), "must not be a wildcard"),
        (StackLayout("t example.test", HTTP_TARGET), "not a valid DNS name"),
        (StackLayout(DOMAIN, "https://d-abc.example"), "not a valid DNS name"),
        (
            StackLayout(
                DOMAIN,
                HTTP_TARGET,
                connect_target=CONNECT_TARGET,
                custom_hostnames={f"connect.{DOMAIN}": "other.test"},
            ),
            "wanted twice",
        ),
        (
            StackLayout(
                DOMAIN,
                HTTP_TARGET,
                validation=(ValidationRecord("x.t.example.test", "TXT", "v", DOMAIN),),
            ),
            "only CNAME validation records",
        ),
    ],
)
def test_impossible_wishes_are_refused_before_anything_is_planned(
    layout: StackLayout, complaint: str
) -> None:
    with pytest.raises(PlanError, match=complaint):
        desired_records(layout)


def test_records_outside_the_zone_are_found() -> None:
    custom = DesiredRecord("api.other.test", "CNAME", HTTP_TARGET)
    apex = DesiredRecord("example.test", "CNAME", HTTP_TARGET)
    assert outside_zone([WILDCARD, custom, apex], "example.test") == [custom]


def test_markers_are_per_stack_and_fit_cloudflare_comments() -> None:
    assert ownership_marker("prod") == "managed by hatchway stack prod"
    long_a, long_b = "a" * 120 + "-one", "a" * 120 + "-two"
    assert len(ownership_marker(long_a)) == MAX_COMMENT_CHARS
    assert ownership_marker(long_a) != ownership_marker(long_b)
    assert ownership_marker(long_a) == ownership_marker(long_a)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        pytest.param([], [Create(WILDCARD)], id="missing record is created"),
        pytest.param([zone_record(WILDCARD.name, HTTP_TARGET)], [], id="matching record is kept"),
        pytest.param(
            [zone_record(WILDCARD.name, HTTP_TARGET.upper() + ".")],
            [],
            id="case and trailing dot are not drift",
        ),
        pytest.param(
            [zone_record(WILDCARD.name, "d-old.execute-api.eu-west-1.amazonaws.com")],
            [
                Update(
                    zone_record(WILDCARD.name, "d-old.execute-api.eu-west-1.amazonaws.com"),
                    WILDCARD,
                )
            ],
            id="changed target is repaired",
        ),
        pytest.param(
            [zone_record(WILDCARD.name, HTTP_TARGET, proxied=True)],
            [Update(zone_record(WILDCARD.name, HTTP_TARGET, proxied=True), WILDCARD)],
            id="proxying switched on is repaired",
        ),
        pytest.param(
            [zone_record(WILDCARD.name, HTTP_TARGET, ttl=3600)],
            [Update(zone_record(WILDCARD.name, HTTP_TARGET, ttl=3600), WILDCARD)],
            id="changed ttl is repaired",
        ),
        pytest.param(
            [zone_record(WILDCARD.name, HTTP_TARGET), zone_record("old.t.example.test", "x.test")],
            [Delete(zone_record("old.t.example.test", "x.test"))],
            id="owned record no longer wanted is deleted",
        ),
        pytest.param(
            [
                zone_record(WILDCARD.name, "d-old.example.test", id="2"),
                zone_record(WILDCARD.name, HTTP_TARGET, id="1", type="TXT"),
            ],
            [
                Delete(zone_record(WILDCARD.name, HTTP_TARGET, id="1", type="TXT")),
                Update(zone_record(WILDCARD.name, "d-old.example.test", id="2"), WILDCARD),
            ],
            id="own record of another type on the name is deleted first",
        ),
        pytest.param(
            [
                zone_record(WILDCARD.name, "d-old.example.test", id="1"),
                zone_record(WILDCARD.name, HTTP_TARGET, id="2"),
            ],
            [Delete(zone_record(WILDCARD.name, "d-old.example.test", id="1"))],
            id="of duplicates the matching one is kept",
        ),
    ],
)
def test_plan_for_records_the_stack_owns(
    actual: list[ZoneRecord], expected: list[Create | Update | Delete]
) -> None:
    plan = plan_changes([WILDCARD], actual, MARKER)

    assert list(plan.changes) == expected
    assert plan.conflicts == ()


FOREIGN = [
    zone_record("www.example.test", "192.0.2.7", type="A", comment=None),
    zone_record("example.test", "v=spf1 -all", type="TXT", comment="mail"),
    zone_record("legacy.t.example.test", "d-x.test", comment="managed by hatchway stack other"),
    zone_record("_acme-challenge.t.example.test", "token", type="TXT", comment=None),
]


def test_foreign_records_are_never_changed_or_deleted() -> None:
    plan = plan_changes([WILDCARD], FOREIGN, MARKER)

    assert list(plan.changes) == [Create(WILDCARD)]
    assert plan.conflicts == ()


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param(zone_record(CONNECT.name, "elsewhere.test", comment=None), id="cname"),
        pytest.param(
            zone_record(CONNECT.name, "192.0.2.1", type="A", comment="by hand"), id="address"
        ),
        pytest.param(
            zone_record(CONNECT.name, "d-x.test", comment="managed by hatchway stack other"),
            id="another stack's record",
        ),
        pytest.param(
            zone_record(CONNECT.name, CONNECT_TARGET, comment=None, proxied=True),
            id="same target but proxied",
        ),
    ],
)
def test_a_foreign_record_on_a_wanted_name_is_a_conflict_and_left_alone(
    foreign: ZoneRecord,
) -> None:
    plan = plan_changes([WILDCARD, CONNECT], [foreign], MARKER)

    assert list(plan.changes) == [Create(WILDCARD)]
    assert [(c.wanted, c.foreign) for c in plan.conflicts] == [(CONNECT, (foreign,))]
    assert "left alone" in str(plan.conflicts[0])


def test_a_foreign_record_serving_exactly_what_is_wanted_is_no_conflict() -> None:
    by_hand = zone_record(CONNECT.name, CONNECT_TARGET + ".", comment=None)

    plan = plan_changes([CONNECT], [by_hand], MARKER)

    assert plan.changes == () and plan.conflicts == ()
    assert plan.foreign_satisfied == (CONNECT,)


def test_own_record_behind_a_foreign_one_is_not_touched_either() -> None:
    foreign = zone_record(CONNECT.name, "elsewhere.test", type="TXT", comment=None)
    mine = zone_record(CONNECT.name, "d-old.test")

    plan = plan_changes([CONNECT], [foreign, mine], MARKER)

    assert plan.changes == ()
    assert len(plan.conflicts) == 1


def test_plan_reads_as_plain_words() -> None:
    stale = zone_record(WILDCARD.name, "d-old.example.test")
    plan = plan_changes([WILDCARD, CONNECT], [stale], MARKER)

    assert plan.lines() == [
        f"repair CNAME *.t.example.test -> d-old.example.test (ttl 1) to "
        f"CNAME *.t.example.test -> {HTTP_TARGET}",
        f"create CNAME connect.t.example.test -> {CONNECT_TARGET}",
    ]
    assert plan_changes([], [], MARKER).lines() == [
        "nothing to change: every wanted record is in place"
    ]
