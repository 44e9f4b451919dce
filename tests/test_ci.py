"""What .ci/run checks before the tests pass on this checkout: lint, format, and every shipped configuration plans,
data outside the project included."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from avzsl.app.workflow_config import MissingDataConfigError, check_config

CONFIGS = sorted([*(REPO / "config").glob("*.yaml"), *(REPO / "config" / "examples").glob("*.yaml")])


@pytest.mark.parametrize("check", [["ruff", "check", "."], ["snakefmt", "--check", "workflow", "Snakefile"]],
                         ids=lambda c: c[0])
def test_the_code_passes_the_lint_and_format_checks(check):
    proc = subprocess.run([sys.executable, "-m", *check], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
def test_the_workflow_passes_snakemake_s_lint(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--lint",
                           "--configfile", str(REPO / "config" / "config.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_configuration_dry_runs(config, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet", "rules",
                           "--cores", "1", "--configfile", str(config)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluate" in proc.stdout and "report_files" in proc.stdout


def test_missing_external_data_is_a_warning_in_a_dry_run_and_an_error_otherwise(tmp_path, monkeypatch):
    from snakemake.utils import validate

    monkeypatch.chdir(tmp_path)  # the example's relative root does not exist here
    cfg = yaml.safe_load((REPO / "config" / "examples" / "released_avca_ucf.yaml").read_text())
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    warnings = check_config(cfg, dry_run=True)
    assert len(warnings) == 1 and "released_avca.root: feature root not found" in warnings[0]
    with pytest.raises(MissingDataConfigError, match="feature root not found"):
        check_config(cfg)
