"""Fixtures shared by the tiers that need the real local Kubernetes (integration/operator, e2e).

The cluster is brought up once per test session — whichever tier asks first — and torn down
at the end if this session started it (``tests/support/kube.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import Cluster, bring_up, exclusive, tear_down


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with exclusive():
        c = bring_up()
        yield c
        tear_down(c)


# -- Seconds per tier (setup + call + teardown of its tests), printed at the end of a run so a
# full run reports what each tier costs. The session cluster's start-up is charged to the
# first test that asked for it; its teardown to the last.
_tier_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("::")[0].split("/")  # tests/<tier>/[<group>/]test_x.py
    tier = "/".join(parts[1:3]) if parts[1] == "integration" and len(parts) > 3 else parts[1]
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _tier_seconds:
        return
    terminalreporter.section("seconds per tier")
    for tier, seconds in sorted(_tier_seconds.items()):
        terminalreporter.write_line(f"{tier:<28} {seconds:8.1f}")
