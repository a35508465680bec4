"""A job's states are core's ``JobState`` (what the store keeps); the client's ``JobState``,
the ``jobs --state`` choices and the API's numbers are that one by its names."""

from __future__ import annotations

import argparse

from maskfarm.client.jobs import JobState
from maskfarm.core import jobs as core
from maskfarm.v1 import segmentation_pb2 as pb


def test_the_client_states_are_the_core_states_by_name() -> None:
    assert [state.name for state in JobState] == [state.name for state in core.JobState]
    assert [state.value for state in JobState] == ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
    for state in JobState:
        assert state.stored is core.JobState[state.name]
        assert state.terminal is state.stored.is_terminal
        assert pb.JobState.Name(state.proto) == f"JOB_STATE_{state.value}"
    assert {state for state in JobState if state.terminal} == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def test_jobs_state_choices_are_the_stored_values() -> None:
    from maskfarm.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    state = next(a for a in commands.choices["jobs"]._actions if a.dest == "state")
    assert state.choices == [stored.value for stored in core.JobState]
