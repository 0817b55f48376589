"""The CPU heap kept for reuse (metaprune.engine.heap): each case in a fresh process, since the
setting is process-wide and made once."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

CHURN = """
import json, resource, torch
from metaprune.engine import heap
from metaprune.engine.runtime import Runtime

def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):  # a step's 64 MiB activation, allocated, written, freed
        torch.empty(16 * 2**20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

before = faults()
Runtime.setup("cpu")
faults()  # the heap grows once
print(json.dumps({"applied": heap.keep_cpu_heap(), "before": before, "after": faults()}))
"""


def churn(**env: str) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "METAPRUNE_"))}
    out = subprocess.run(
        [sys.executable, "-c", CHURN], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_job_reuses_freed_memory_instead_of_faulting_it_in_again():
    res = churn()
    assert res["applied"]
    assert res["before"] > 8 * 10_000  # glibc maps each 64 MiB block anew: 16,384 pages each
    assert res["after"] < res["before"] / 10


@pytest.mark.parametrize(
    "env",
    [
        {"METAPRUNE_KEEP_HEAP": "0"},
        {"METAPRUNE_KEEP_HEAP": "off"},
        {"MALLOC_ARENA_MAX": "2"},
        {"MALLOC_TOP_PAD_": "0"},
    ],
)
def test_the_users_choice_leaves_glibc_as_it_is(env):
    res = churn(**env)
    assert not res["applied"]
    assert res["after"] > res["before"] / 2


def test_an_unknown_word_for_the_switch_is_a_named_error():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METAPRUNE_")}
    code = "from metaprune.engine.runtime import Runtime; Runtime.setup('cpu')"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "METAPRUNE_KEEP_HEAP": "sometimes"},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "ValueError: METAPRUNE_KEEP_HEAP must be auto, true, false" in out.stderr
