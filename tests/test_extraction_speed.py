"""Extraction speed settings (issue 27): threads planned from the job's cores, video networks in channels-last
(equal to NCDHW at float error), bf16 refused in the reference mode, the GPU check script's dry run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from torch import nn

from avzsl.app.workflow_config import check_config
from extractors.backbones.base import Backbone, Combined, InputFormat, ModalitySpec
from extractors.extract import (
    ExtractionError,
    ExtractOptions,
    check_precision,
    job_cores,
    plan_threads,
    to_channels_last,
)
from training.config import ConfigError


def test_threads_are_planned_from_the_jobs_cores():
    cpu = plan_threads(2, "cpu")
    # the CPU network takes every core; one decode worker fills the gaps at the lowest priority
    assert (cpu.torch_threads, cpu.interop_threads, cpu.decode_workers, cpu.idle_workers) == (2, 1, 1, True)
    assert plan_threads(32, "cpu").decode_workers == 2
    gpu = plan_threads(8, "cuda")
    assert (gpu.torch_threads, gpu.decode_workers, gpu.idle_workers) == (1, 7, False)
    assert plan_threads(1, "cuda").decode_workers == 1
    assert plan_threads(4, "cpu", workers=0).decode_workers == 0  # decode in the job's own process
    assert plan_threads(4, "cuda", workers=2).torch_threads == 2


def test_job_cores_never_exceed_the_allocation(monkeypatch):
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert job_cores(1) == 1
    assert job_cores(10_000) == available
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert job_cores(10_000) == 1
    with pytest.raises(ExtractionError, match="threads must be at least 1"):
        ExtractOptions(threads=0)


def test_channels_last_equals_ncdhw_at_float_error():
    from extractors.backbones.selavi import video_encoder

    torch.manual_seed(0)
    net = video_encoder().eval()
    x = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)  # (B, T, H, W, C) as the windows arrive
    inp = ((x.permute(0, 4, 1, 2, 3).float() / 255.0) - 0.45) / 0.225
    with torch.inference_mode():
        want = net(inp.contiguous())  # torch's NCDHW default throughout
        to_channels_last(net)
        assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        got = net(inp)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


class _Moded(Backbone):
    name = "test_moded"
    default_params = {"mode": "clean"}

    def __init__(self, mode="clean", modalities=("audio", "video")):
        super().__init__(mode=mode)
        self.modalities = modalities
        self.specs = {m: ModalitySpec(1.0, 1.0, 4) for m in modalities}
        self.input_format = InputFormat(fps=1.0, sample_rate=16000)
        self.lin = nn.Linear(1, 1)


def test_bf16_is_refused_in_the_reference_mode():
    check_precision(_Moded("reference"), "fp32")
    check_precision(_Moded("clean"), "bf16")
    with pytest.raises(ExtractionError, match=r"extract.precision: bf16 is refused with mode: reference "
                                              r"\(feature_sets.main.params.mode\)"):
        check_precision(_Moded("reference"), "bf16", "feature_sets.main")
    both = Combined(_Moded("clean", ("audio",)), _Moded("reference", ("video",)))
    with pytest.raises(ExtractionError, match=r"feature_sets.cls.video.params.mode"):
        check_precision(both, "bf16", "feature_sets.cls")


def test_the_configuration_refuses_bf16_with_a_reference_backbone():
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["feature_sets"]["handcrafted"] = {"audio": {"backbone": "handcrafted", "params": {}},
                                          "video": {"backbone": "c3d", "params": {"mode": "reference"}}}
    cfg["extract"]["precision"] = "bf16"
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    with pytest.raises(ConfigError, match=r"extract.precision: bf16 is refused with "
                                          r"feature_sets.handcrafted.video.params.mode: reference"):
        check_config(cfg)
    cfg["extract"]["precision"] = "fp32"
    check_config(cfg)


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_in_its_dry_mode(tmp_path):
    """bench/gpu_check.sh --dry: every step (extraction benchmark, DAAN and AVCA steps, the UCF estimate) on the
    CPU at tiny sizes, so that the GPU run does not rot."""
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    assert proc.returncode == 0, summary + proc.stderr[-2000:]
    for name in ("extract_fp32_b2.json", "extract_bf16_b2.json", "daan_step_fp32.json", "daan_step_bf16.json",
                 "train.jsonl", "ucf_estimate.json", "ucf_estimate.md"):
        assert (out / name).stat().st_size > 0, name
    assert "whole UCF benchmark" in summary and "whole / network" in summary
    assert Path(out / "daan_step_fp32.json").read_text().startswith("{")
