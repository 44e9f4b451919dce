"""Every rule of the workflow as Snakemake loads it (the default configuration, parsed in this process; no DAG,
no job): what each rule declares reaches its command, and each names its environment, its log and its memory."""

from __future__ import annotations

import inspect
import re
import shutil

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import OutputSettings, ResourceSettings

    wd = tmp_path_factory.mktemp("rules")
    (wd / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", wd / "config" / "config.yaml")
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=REPO / "Snakefile",
                                workdir=wd)._workflow
        # target rules (no command) aggregate others' outputs
        yield [r for r in workflow.rules if not r.norun]


def test_every_rule_names_the_environment_and_a_log(rules):
    assert len(rules) >= 20
    for rule in rules:
        assert rule.log, f"rule {rule.name} has no log"
        assert rule.conda_env == "../../envs/avzsl.yaml", f"rule {rule.name}: environment {rule.conda_env!r}"


def test_every_rule_s_memory_grows_with_the_attempt(rules):
    """profiles/slurm retries failed jobs; each retry asks for more memory."""
    with_memory = [r for r in rules if "mem_mb" in r.resources]
    assert len(with_memory) >= 10
    for rule in with_memory:
        asked = [rule.resources["mem_mb"].evaluate({}, attempt).value for attempt in (1, 2, 3)]
        assert asked[1] == 2 * asked[0] and asked[2] == 3 * asked[0], f"rule {rule.name}: {asked}"


def _derived(params, section: str) -> bool:
    return any(callable(f) and section in inspect.signature(f).parameters for f in params)


def test_every_rule_passes_every_path_it_declares(rules):
    """A declared output (or named input) the command never receives is a file name written in two places. A path
    may reach the command through a parameter computed from it (``lambda w, output: folder_of(output)``); training
    inputs (``unpack(run_inputs)``) reach it inside the run configuration, built from the same path functions."""
    from snakemake.io import is_flagged

    for rule in rules:
        for section, files in (("input", rule.input), ("output", rule.output)):
            if _derived(rule.params, section):
                continue
            for key in files._names:
                assert re.search(rf"\{{{section}\.{key}\b", rule.shellcmd), \
                    f"rule {rule.name}: {section}.{key} never passed"
            named = {i for start, end in files._names.values()
                     for i in range(start, end if end is not None else start + 1)}
            unnamed = [f for i, f in enumerate(files) if i not in named and not is_flagged(f, "unpack")]
            if unnamed:
                assert re.search(rf"\{{{section}(:q)?\}}", rule.shellcmd), f"rule {rule.name}: {section} never passed"
