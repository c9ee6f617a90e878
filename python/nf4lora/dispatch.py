"""Measured backend choice: which backend runs a call, per (GPU, dtype, M range, shape).

The tables are written by ``bench/make_dispatch_table.py`` from benchmark results (bench/results)
and shipped in ``nf4lora/data/dispatch_*.json``; nothing in them is typed in by hand. One table per
GPU model (``torch.cuda.get_device_name()``)::

    {"device": "NVIDIA H200", "dtype": "bfloat16", "rank": 16, "sources": [...], "rules": [
        {"op": "qlora_linear", "m_min": 1, "m_max": 16, "K": 4096, "N": 14336, "backend": "cuda",
         "times_us": {"1": {"cuda": 51.0, "triton": 140.6}, "16": {...}}},
        {"op": "qlora_linear", "m_min": 1, "m_max": 16, "K": null, "N": null, "backend": "cuda",
         "won": {"1": "5 of 5 shapes", "16": "5 of 5 shapes"}}, ...]}

A rule with K = N = null covers the shapes the benchmark did not measure (the backend that won on
most measured shapes). ``preferred`` answers with the rule's backend or None where no rule applies
(another GPU, dtype or M range): ops.py then keeps its default order. The chosen backend must
still take the call (ops.py checks), so a table can reorder backends but never route a call to a
kernel that cannot run it.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Dict, List, Optional

import torch

from . import _cuda_ext

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@functools.lru_cache(maxsize=None)
def tables() -> Dict[tuple, List[dict]]:
    """{(device name, dtype name): rules} from every shipped dispatch_*.json."""
    out: Dict[tuple, List[dict]] = {}
    for path in sorted(glob.glob(os.path.join(DATA_DIR, "dispatch_*.json"))):
        with open(path) as f:
            table = json.load(f)
        out.setdefault((table["device"], table["dtype"]), []).extend(table["rules"])
    return out


@functools.lru_cache(maxsize=4096)
def preferred(op: str, device_name: str, dtype: torch.dtype, M: int, K: int, N: int) -> Optional[str]:
    """The measured-fastest backend for this call, or None where the tables say nothing (cached:
    this runs on every call)."""
    rules = tables().get((device_name, _dtype_name(dtype)))
    if not rules:
        return None
    fallback = None
    for rule in rules:
        if rule["op"] != op or not rule["m_min"] <= M <= rule["m_max"]:
            continue
        if rule["K"] == K and rule["N"] == N:
            return rule["backend"]
        if rule["K"] is None and fallback is None:
            fallback = rule["backend"]
    return fallback


@functools.lru_cache(maxsize=None)
def device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


@functools.lru_cache(maxsize=None)
def _cuda_available() -> bool:
    return torch.cuda.is_available()  # asked once: it costs µs per call, and this runs on every call


def cuda_device_name(device: torch.device) -> str:
    """The GPU model of a CUDA device ("" without CUDA: no table applies)."""
    if not _cuda_available():
        return ""
    return device_name(_cuda_ext.device_index(device))
