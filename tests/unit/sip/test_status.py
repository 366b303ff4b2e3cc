"""Reason phrases (RFC 3261 §21) and SIP → XMPP error conditions (RFC 7247 via reference/sip.md §2.13)."""

from __future__ import annotations

import pytest

from plugins.sip.status import (
    TIMEOUT_CONDITION,
    TRANSPORT_FAILURE_CONDITION,
    reason_phrase,
    xmpp_condition,
)


@pytest.mark.parametrize(
    ("status", "condition"),
    [
        (302, "redirect"),
        (301, "gone"),
        (400, "bad-request"),
        (401, "not-authorized"),
        (403, "forbidden"),
        (404, "item-not-found"),
        (405, "not-allowed"),
        (407, "not-authorized"),
        (408, "remote-server-timeout"),
        (413, "policy-violation"),
        (415, "bad-request"),
        (480, "recipient-unavailable"),
        (486, "recipient-unavailable"),
        (488, "not-acceptable"),
        (491, "unexpected-request"),
        (500, "internal-server-error"),
        (501, "feature-not-implemented"),
        (502, "remote-server-not-found"),
        (503, "service-unavailable"),
        (504, "remote-server-timeout"),
        (513, "policy-violation"),
        (603, "service-unavailable"),
        (604, "item-not-found"),
    ],
)
def test_mapped_statuses(status, condition):
    """Each listed SIP final response maps to its XMPP condition (reference/sip.md §2.13)."""
    assert xmpp_condition(status) == condition


@pytest.mark.parametrize(
    ("status", "condition"), [(399, "redirect"), (499, "undefined-condition"), (555, "undefined-condition")]
)
def test_unlisted_statuses(status, condition):
    """Unlisted 3xx are redirects; other unlisted failures are undefined-condition."""
    assert xmpp_condition(status) == condition


@pytest.mark.parametrize("status", [100, 200, 202, 700, 99])
def test_non_failures_are_refused(status):
    """1xx and 2xx are not failures, and out-of-range codes are not SIP statuses."""
    with pytest.raises(ValueError):
        xmpp_condition(status)


def test_timeout_and_transport_failure():
    """Timer F counts as 408 (RFC 3261 §8.1.3.1); an unreachable server as 502."""
    assert TIMEOUT_CONDITION == "remote-server-timeout"
    assert TRANSPORT_FAILURE_CONDITION == "remote-server-not-found"


def test_reason_phrases():
    """RFC phrases for known codes, the class name for unknown ones."""
    assert [reason_phrase(s) for s in (200, 202, 404, 481, 513, 499)] == [
        "OK",
        "Accepted",
        "Not Found",
        "Call/Transaction Does Not Exist",
        "Message Too Large",
        "Client Error",
    ]
