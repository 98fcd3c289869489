"""The batch wire format does not move: every batch of the deterministic
chains in tests/batch_golden.py, and the codec state after it, hash to what
tests/vectors/batch/golden.json recorded (the encoder before the board's
memory work). Both ends are exercised: the HES decodes each batch and
reaches the agent's state."""

from __future__ import annotations

import json

import pytest

from tests.batch_golden import GOLDEN, SCENARIOS, run

WANT = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=["%d-%d-%d" % s for s in SCENARIOS])
def test_batches_and_states_are_byte_identical(scenario: tuple[int, int, int]) -> None:
    got = run(*scenario)
    want = WANT["%d-%d-%d" % scenario]
    assert len(got) == len(want)
    for hour, (g, w) in enumerate(zip(got, want, strict=True), 1):
        assert g[0] == w[0], "batch %d of %s changed" % (hour, scenario)
        assert g[1] == w[1], "codec state after batch %d of %s changed" % (hour, scenario)
