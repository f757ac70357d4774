"""The dossier state machine: national codes, allowed and refused transitions."""

from __future__ import annotations

import pytest

from gateway.v1 import dossier_pb2
from services.routing.lifecycle import (
    NATIONAL,
    TRANSITIONS,
    InvalidTransition,
    State,
    check_transition,
)


def test_every_state_has_a_national_code_and_the_codes_are_the_portal_s_1_to_10() -> None:
    assert set(NATIONAL) == set(State) == set(TRANSITIONS)
    assert sorted(NATIONAL.values()) == list(range(1, 11))
    assert NATIONAL[State.SUPPLEMENT_REQUESTED] == dossier_pb2.DOSSIER_STATUS_SUPPLEMENT_REQUESTED
    assert NATIONAL[State.DECIDED] == 9


@pytest.mark.parametrize(
    ("current", "requested"),
    [
        (State.REGISTERED, State.RECEIVED),
        (State.RECEIVED, State.PROCESSING),
        (State.PROCESSING, State.SUPPLEMENT_REQUESTED),
        (State.SUPPLEMENT_REQUESTED, State.PROCESSING),
        (State.SUPPLEMENT_REQUESTED, State.REFUSED),
        (State.PROCESSING, State.REFUSED),
        (State.PROCESSING, State.DECIDED),
        (State.DECIDED, State.RESULT_RETURNED),
        (State.PROCESSING, State.FEES_DUE),
        (State.FEES_DUE, State.PROCESSING),
    ],
)
def test_allowed_transitions(current: State, requested: State) -> None:
    check_transition("D-1", current, requested)


@pytest.mark.parametrize(
    ("current", "requested"),
    [
        (State.DECIDED, State.PROCESSING),
        (State.REFUSED, State.PROCESSING),
        (State.SUPPLEMENT_REQUESTED, State.DECIDED),  # not while waiting for the citizen
        (State.RECEIVED, State.DECIDED),
        (State.RESULT_RETURNED, State.DECIDED),
        (State.PROCESSING, State.RESULT_RETURNED),
        (State.PROCESSING, State.PROCESSING),
    ],
)
def test_refused_transitions_name_both_states(current: State, requested: State) -> None:
    with pytest.raises(InvalidTransition) as refused:
        check_transition("D-1", current, requested)
    problem = refused.value
    assert problem.status == 409
    assert problem.extensions["current_state"] == current.value
    assert problem.extensions["requested_state"] == requested.value
    assert problem.extensions["current_status"] == NATIONAL[current]
    assert f"D-1 is {current.value}" in problem.detail


def test_final_states_have_no_way_out() -> None:
    for final in (State.REFUSED, State.WITHDRAWN, State.STOPPED, State.RESULT_RETURNED):
        assert TRANSITIONS[final] == frozenset()
