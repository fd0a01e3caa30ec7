"""ncf-ml100k's MF-BPR vs implicit timing: besides the suite's single timings, the two are timed
alternately in one process (same load, same threads) and the median ratio is reported."""

import pytest

from recfunnel.bench.ncf import run_ncf_suite
from recfunnel.settings import has_dataset

pytest.importorskip("implicit.cpu.bpr")


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_the_mf_bpr_rows_carry_an_alternating_side_by_side_timing_against_implicit():
    rows = run_ncf_suite(quick=True, progress=False, models=["MF-BPR", "implicit-bpr"], isolate=False)
    mf = [r for r in rows if r["model"] == "MF-BPR"]
    assert {r["protocol"] for r in mf} == {"full", "sampled-99"}
    side = mf[0]["comparison"]["side_by_side"]
    assert side["rounds"] == 2 and side["epochs"] == mf[0]["epochs_run"]
    assert len(side["ours_seconds"]) == len(side["implicit_seconds"]) == 2
    assert side["ratios"] == pytest.approx(
        [a / b for a, b in zip(side["ours_seconds"], side["implicit_seconds"], strict=True)]
    )
    assert min(side["ratios"]) <= side["median_ratio"] <= max(side["ratios"])
    assert mf[0]["machine"]["torch_threads"] == 1
