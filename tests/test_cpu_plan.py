"""How `joint score` and score_iter share the CPU cores: plan_cpu (issue 21 item 2)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from joint_core import NaturalnessScorer
from joint_core.config import get_preset
from joint_core import devices
from joint_core.stream.loader import HEAVY_GFLOPS, LOW_PRIORITY, CpuPlan, plan_cpu


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n):
        monkeypatch.setattr(devices, "available_cores", lambda: n)   # where plan_cpu lives
    return set_cores


def test_heavy_model_gets_every_core_and_one_low_priority_decoder(cores):
    cores(2)
    assert plan_cpu("cpu", gflops=35.7) == CpuPlan(workers=1, threads=2, nice=LOW_PRIORITY)
    cores(16)
    assert plan_cpu("cpu", gflops=HEAVY_GFLOPS) == CpuPlan(workers=1, threads=16, nice=LOW_PRIORITY)


def test_light_model_shares_the_cores_with_decoders_at_normal_priority(cores):
    cores(2)            # below four cores: decode between batches, every core to the model
    assert plan_cpu("cpu", gflops=1.4) == CpuPlan(workers=0, threads=2, nice=0)
    cores(4)
    assert plan_cpu("cpu", gflops=1.4) == CpuPlan(workers=1, threads=3, nice=0)
    cores(16)
    assert plan_cpu("cpu", gflops=1.4) == CpuPlan(workers=4, threads=12, nice=0)
    assert plan_cpu("cpu", gflops=None) == plan_cpu("cpu", gflops=1.4)   # unknown cost: the light rule


def test_user_choices_are_kept(cores):
    cores(2)
    # no workers: nothing to lower; the model keeps every core
    assert plan_cpu("cpu", gflops=35.7, workers=0) == CpuPlan(workers=0, threads=2, nice=0)
    # threads given: the user shares the cores himself, so the decoder is not lowered either
    assert plan_cpu("cpu", gflops=35.7, threads=1) == CpuPlan(workers=1, threads=1, nice=0)
    assert plan_cpu("cpu", gflops=1.4, workers=3, threads=5) == CpuPlan(workers=3, threads=5, nice=0)
    assert plan_cpu("cpu", gflops=1.4, workers=0) == CpuPlan(workers=0, threads=2, nice=0)
    assert plan_cpu("cpu", gflops=1.4, workers=1) == CpuPlan(workers=1, threads=1, nice=0)


def test_one_core_decodes_in_process_and_gpu_decodes_on_all_but_one(cores):
    cores(1)
    assert plan_cpu("cpu", gflops=35.7) == CpuPlan(workers=0, threads=1, nice=0)
    cores(8)
    assert plan_cpu(torch.device("cuda"), gflops=None) == CpuPlan(workers=7, threads=None, nice=0)
    assert plan_cpu("cuda:0", workers=2) == CpuPlan(workers=2, threads=None, nice=0)


def test_gflops_is_a_model_property_that_grows_with_the_input():
    small = NaturalnessScorer.from_config(get_preset("tiny-test"))
    cfg = get_preset("tiny-test")
    t = cfg.preprocess.technical
    t.size, t.crop = t.size * 2, t.crop * 2
    big = NaturalnessScorer.from_config(cfg)
    g = small.gflops()
    assert g > 0 and small.gflops() == g          # counted once, the same value again
    assert big.gflops() > 1.5 * g                 # four times the technical pixels


def test_score_iter_plans_when_asked_and_restores_threads(cores, tmp_path):
    from PIL import Image

    import numpy as np

    cores(2)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(5):
        p = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    s = NaturalnessScorer.from_config(get_preset("tiny-test"))
    before = torch.get_num_threads()
    planned = [r for batch in s.score_iter(paths, batch_size=2, num_workers=None, progress=False) for r in batch]
    assert torch.get_num_threads() == before
    plain = [r for batch in s.score_iter(paths, batch_size=2, progress=False) for r in batch]
    assert [r["source"] for r in planned] == paths
    assert [r["naturalness"] for r in planned] == pytest.approx([r["naturalness"] for r in plain], abs=1e-5)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this platform")
def test_worker_init_lowers_the_decoder_priority():
    code = textwrap.dedent("""
        import os
        from joint_core.stream.loader import _quiet_worker
        base = os.nice(0)
        _quiet_worker(0, nice=5)
        print(os.nice(0) - base)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == min(5, 19 - os.nice(0))
