"""Scratch A/B (s25 run 5): the small-M TMA ring's 16-row blocks (tiles 1) against its 32-row ones (tiles 2, the
default) at M > 8, in one process by gemv_time's --env method: the plan's tiles taken from GEMV_TILES_AB at each call."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from nf4lora import _cuda_ext, ops  # noqa: E402

_orig = _cuda_ext.plan_forward_small


def _plan(x, q, r, tiles=None, pipeline=None):
    return _orig(x, q, r, int(os.environ.get("GEMV_TILES_AB", "2")), pipeline)


_cuda_ext.plan_forward_small = _plan
# the eager path binds the first plan of a signature (ops._with_plan): plan at every call instead (s25 run 5 lost
# its A/B to that: both graphs ran the first value's plan)
ops._with_plan = lambda fn, plan, key: fn
import gemv_time  # noqa: E402

gemv_time.main(sys.argv[1:])
