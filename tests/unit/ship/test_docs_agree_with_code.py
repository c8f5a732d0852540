"""What the docs tell users to type, and what they say the code does, checked against the code.

* Every ``consortiumctl …`` command line in the README, docs/, the chart README and the samples
  parses with the real ``consortiumctl`` parser (``consortium_node.ctl.main.parser``): every
  subcommand, flag and choice exists and no stray positional is given. Prose abbreviates, so a
  command in running text or with ``…`` may leave out required arguments; a full command in a
  code block may not.
* The NetworkPolicy section of docs/reference/security.md names exactly the pod labels that
  ``builders.network_policy`` admits.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from consortium_node.ctl.main import parser
from consortium_operator.api.spec import parse_consortium
from consortium_operator.kube import builders

ROOT = Path(__file__).resolve().parents[3]
DOCS = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("charts/*/README.md")]
) + sorted(ROOT.glob("crds/samples/*.yaml"))
CTL = re.compile(r"(?:^|(?<=[\s/(]))consortiumctl\b")


@dataclass(frozen=True)
class Command:
    where: str
    text: str  # from "consortiumctl" on
    complete: bool  # a full command (a code block without "…"): required arguments too


def _shell_line(line: str) -> str:
    """A code block's command up to a shell comment, pipe, redirection or `&`."""
    line = re.split(r"\s#", line, maxsplit=1)[0]
    return re.split(r"\s(?:\||&&|&|;|>|2>)(?:\s|$)", line + " ", maxsplit=1)[0].strip()


def commands(path: Path) -> Iterator[Command]:
    text = path.read_text()
    rel = str(path.relative_to(ROOT))
    if path.suffix == ".yaml":  # the samples: commands in comments, up to a closing paren
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#") and (m := CTL.search(line)):
                yield Command(f"{rel}:{number}", line[m.start() :].split(")")[0], False)
        return
    in_block = False
    pending = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            joined = pending + line
            if joined.rstrip().endswith("\\"):
                pending = joined.rstrip()[:-1] + " "
                continue
            pending = ""
            if m := CTL.search(joined):
                command = _shell_line(joined[m.start() :])
                yield Command(f"{rel}:{number}", command, "…" not in command)
            continue
        # Running text (table cells escape "|" as "\|"): code spans that start with the tool.
        for span in re.findall(r"`([^`]+)`", line.replace("\\|", "|")):
            if m := CTL.match(span.removeprefix(".venv/bin/")):
                yield Command(f"{rel}:{number}", span.removeprefix(".venv/bin/"), False)


def variants(command: str) -> Iterator[list[str]]:
    """argv lists for a documented command: ``a|b`` tries each alternative, ``[…]`` marks are
    dropped (what they enclose is checked), ``…`` after a flag stands for its value and
    anywhere else for arguments left out."""
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))[1:]
    if not tokens or tokens[0] == "…":
        return  # "consortiumctl …": no subcommand named
    argv: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token == "…":
            if i and tokens[i - 1].startswith("--"):
                argv.append(["VALUE"])
            continue
        bare = token.replace("…", "")
        if "|" in bare and not bare.startswith(("http", "/")):
            argv.append(bare.split("|"))
        else:
            argv.append([bare])
    for choice in itertools.product(*argv):
        yield list(choice)


class _RefusedError(Exception):
    pass


def _refuse(self: argparse.ArgumentParser, message: str) -> None:
    raise _RefusedError(message)


def _relaxed(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``p`` with nothing required (argparse reports a missing required argument before an
    unknown one, so relaxing is how an abbreviated command still has its flags checked)."""
    for action in p._actions:  # argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relaxed(sub)
        else:
            action.required = False
    for group in p._mutually_exclusive_groups:
        group.required = False
    return p


DOCUMENTED = [c for path in DOCS for c in commands(path)]


def test_the_docs_show_consortiumctl_commands() -> None:
    assert len(DOCUMENTED) >= 20
    assert any(c.complete for c in DOCUMENTED)
    assert any(c.text.startswith("consortiumctl vote") for c in DOCUMENTED)


@pytest.mark.parametrize("command", DOCUMENTED, ids=[c.where for c in DOCUMENTED])
def test_documented_command_parses(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(argparse.ArgumentParser, "error", _refuse)
    checked = 0
    for argv in variants(command.text):
        try:
            (parser() if command.complete else _relaxed(parser())).parse_args(argv)
        except _RefusedError as exc:
            pytest.fail(f"{command.where}: `{command.text}` as {argv}: {exc}")
        checked += 1
    assert checked or command.text.split()[1:2] == ["…"], command


def test_the_check_catches_wrong_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old crds.md line: a positional id and --for/--against, which consortiumctl lacks."""
    monkeypatch.setattr(argparse.ArgumentParser, "error", _refuse)
    for argv in variants("consortiumctl vote PROPOSAL_ID --for|--against --kube NAME"):
        with pytest.raises(_RefusedError, match="unrecognized arguments: PROPOSAL_ID --"):
            _relaxed(parser()).parse_args(argv)
    with pytest.raises(_RefusedError, match="required: --consortium"):  # complete: all of it
        parser().parse_args(["vote", "--approve", "--kube", "NAME"])


# ---------------------------------------------------------------------- NetworkPolicy labels
def _label_pairs(text: str) -> set[str]:
    """`key: value` code spans whose key looks like a Kubernetes label key."""
    return {
        " ".join(span.split())
        for span in re.findall(r"`([^`]+)`", " ".join(text.split()))
        if re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+: \S+", " ".join(span.split()))
    }


def test_security_doc_names_the_network_policy_labels() -> None:
    sample = yaml.safe_load((ROOT / "crds/samples/consortium.yaml").read_text())
    spec = parse_consortium("demo", sample["spec"])
    policy = builders.network_policy(spec, "ns", "uid")
    admitted = set()
    for peer in policy["spec"]["ingress"][0]["from"]:
        for key, value in peer["podSelector"]["matchLabels"].items():
            shown = {"demo": "<consortium>", "true": '"true"'}.get(value, value)
            admitted.add(f"{key}: {shown}")
    doc = (ROOT / "docs/reference/security.md").read_text()
    section = doc.split("### NetworkPolicy", 1)[1].split("\n### ", 1)[0]
    assert _label_pairs(section) == admitted
