"""One command, one hop: every rule runs ``python -m avzsl <command>``, its name agrees with the command's, and the
command is a function of that name in the package the rule belongs to, so that ``grep`` from a rule lands on its
code.

The rule of agreement: a rule is named as its command (``-`` written ``_``), or ``<command>_<qualifier>`` when one
command serves a family of rules (``fetch`` runs ``fetch_weights``, ``fetch_text_weights`` and
``fetch_ucf_archive``; ``train`` runs ``train_stage1`` and ``train_stage2``). The function a command runs is named
as the command, in the command module of the package that owns the rule's stage.
"""

from __future__ import annotations

import re

from conftest import REPO

from avzsl.app.cli import commands

# the package whose command module serves the rules of each rule file
PACKAGE_OF_RULE_FILE = {"acquire": "extractors", "extract": "extractors", "splits": "extractors",
                        "text": "extractors", "train": "training", "evaluate": "training", "report": "training",
                        "evidence": "bench"}
BY_HAND_ONLY = {"resolve", "lock"}  # commands no rule runs
COMMAND = re.compile(r"python -m avzsl((?:\s+(?:--quiet|-q|--threads\s+\S+|--gpus\s+\S+))*)\s+([a-z][\w-]*)")


def rule_commands() -> dict[str, tuple[str, str]]:
    """``{rule: (rule file stem, command)}`` of every rule that runs a shell command."""
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):(.*?)(?=^rule |^for |\Z)", smk.read_text(), re.M | re.S):
            if "shell:" not in body:
                continue
            found = COMMAND.findall(body.split("shell:")[-1])
            assert len(found) == 1, f"rule {name} ({smk.name}) runs no `python -m avzsl <command>`, or several"
            out[name] = (smk.stem, found[0][1])
    return out


def agrees(rule: str, command: str) -> bool:
    stem = command.replace("-", "_")
    return rule == stem or rule.startswith(stem + "_")


def test_the_rule_of_agreement():
    assert agrees("merge_features", "merge-features") and agrees("fetch_ucf_archive", "fetch")
    assert agrees("train_stage1", "train") and not agrees("summary", "report")
    assert not agrees("official_splits", "copy-splits") and not agrees("fetching", "fetch")


def test_every_rule_runs_the_command_of_its_name_from_its_package():
    known = commands()
    rules = rule_commands()
    assert len(rules) >= 28
    for rule, (stem, command) in rules.items():
        assert command in known, f"rule {rule} runs `avzsl {command}`, which is not a command"
        assert agrees(rule, command), f"rule {rule} runs `avzsl {command}`: the names disagree"
        func = known[command]
        package = PACKAGE_OF_RULE_FILE[stem]
        assert func.__name__ == command.replace("-", "_"), f"`avzsl {command}` runs {func.__name__}"
        assert func.__module__ == f"{package}.cli", f"rule {rule} ({stem}.smk) runs {func.__module__}.{func.__name__}"


def test_every_command_serves_a_rule_or_is_for_use_by_hand():
    served = {command for _, command in rule_commands().values()}
    assert set(commands()) - served == BY_HAND_ONLY
