"""Power cuts at any points of an OTA download (parkgate.ota), drawn by
Hypothesis on CPython: whatever the cuts (torn flash operations, a record
save cut before its rename), every new Download resumes at the first chunk
of the block after the last recorded one, nothing is staged before the whole
image is in the slot, and the image that ends up staged is the one offered.
The same scenario with fixed cut points runs on the gate's image too
(tests/core/test_ota_cuts.py)."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_ota import IMAGE, V, slot_holds
from test_ota_cuts import download_with_cuts

CUT = st.tuples(st.integers(0, 30),          # chunks fed before the cut is armed
                st.integers(0, 1),           # 0: a flash operation torn, 1: a record save
                st.integers(1, 12),          # the n-th operation / save from there
                st.integers(0, 2 ** 16))     # the tear's random stream


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(CUT, min_size=1, max_size=6), chunk=st.sampled_from([64, 256, 512]))
def test_any_cuts_resume_and_stage_only_the_whole_image(cuts, chunk):
    slots, progress, dl, resumed = download_with_cuts(cuts, chunk=chunk)
    assert slot_holds(slots.b, IMAGE)
    assert slots.b.boots == 0
    dl.stage()
    assert slots.b.boots == 1 and progress.read() == ("pending", V)
