"""Every gradient rule against finite differences, and every rule has a case."""

from __future__ import annotations

import pytest

from camcore.graph import RULES
from tests.graph.fd import check_case
from tests.graph.rule_cases import RuleCase, all_cases

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_matches_finite_differences(case: RuleCase) -> None:
    check_case(case)


def test_every_registered_rule_has_a_case() -> None:
    covered = {c.op for c in CASES}
    missing = sorted(set(RULES) - covered)
    assert not missing, f"registered rules without a finite-difference case: {missing}"


def test_cases_name_registered_ops() -> None:
    unknown = sorted({c.op for c in CASES} - set(RULES))
    assert not unknown, f"cases for ops with no rule: {unknown}"
