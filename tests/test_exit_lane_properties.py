"""The exit lane's promises under Hypothesis on CPython: the same physical
lane as tests/core/test_exit_lane.py's seeded runs (tests/core/exit_lane_model.py),
with Hypothesis choosing every move so that a broken promise shrinks to a
short story. The seeded runs cover the gate's own MicroPython."""
import os
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "core"))
import exit_lane_model  # noqa: E402


@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.randoms(use_true_random=False), st.integers(20, 250))
def test_every_car_out_once_paid_and_nothing_lost(rnd, steps):
    exit_lane_model.World(rnd, steps).run()
