"""The fault suite's bookkeeping: what counts as a failure, recovery time, the table (the suite itself is
`make faults`, against a real stack)."""

from __future__ import annotations

from loadtests.faults import Accepted, Answer, FaultResult, Load, bad_answers, render, summarize


def _load(answers: list[Answer], accepted: list[Accepted]) -> Load:
    load = Load("http://unused", ["token"], "reader", ["CODE"], rate=1.0, write_rate=1.0)
    load.answers, load.accepted = answers, accepted
    return load


def test_only_5xx_other_than_503_fail_the_suite() -> None:
    answers = [Answer(0, "createMemory", s) for s in ("202", "503", "503", "429", "timeout", "500", "502")]
    assert bad_answers(answers) == {"createMemory 500": 1, "createMemory 502": 1}


def test_recovery_runs_from_the_fault_to_the_last_failed_request_of_its_window() -> None:
    answers = [
        Answer(9.0, "getStandard", "200"),  # before the fault: not counted
        Answer(10.5, "getStandard", "503"),
        Answer(12.0, "createMemory", "connection"),
        Answer(13.2, "getStandard", "503", done=13.4),  # recovery counts until the answer came
        Answer(15.0, "getStandard", "200"),
    ]
    load = _load(answers, [Accepted(11.0, "m1", "j1", 0), Accepted(30.0, "m2", None, 0)])
    result = FaultResult("postgres restart", injected=10.0, healed=11.0, ended=20.0)
    summarize(load, result)
    assert result.statuses == {"200": 1, "503": 2, "connection": 1}
    assert round(result.recovery_s, 1) == 3.4 and result.accepted == 1
    table = render([result])
    assert "postgres restart" in table and "503: 2" in table and "3.4s" in table


def test_a_fault_nobody_noticed_recovers_in_zero() -> None:
    result = FaultResult("embedder kill", injected=0.0, healed=0.0, ended=5.0, note="1 replica(s) killed")
    summarize(_load([Answer(1.0, "searchStandards", "200")], []), result)
    assert result.recovery_s == 0.0 and "(1 replica(s) killed)" in render([result])
