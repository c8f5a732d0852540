#!/usr/bin/env python3
"""Keep the sample Consortium's allowed measurement equal to this build's code measurement.

The node image measures its installed ``consortium_node`` package; a Consortium whose
``spec.attestation.measurements`` does not list that value refuses every node. This rewrites the
64-hex entry of ``measurements`` in crds/samples/consortium.yaml in place (text substitution, so
comments and layout survive).

usage: scripts/update-sample-measurement.py [--check] [--file PATH]
  --check   change nothing; exit 1 with a message if the sample is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "node_image"))

from consortium_node.attestation.measurement import measure_tree  # noqa: E402

SAMPLE = ROOT / "crds" / "samples" / "consortium.yaml"
PACKAGE = ROOT / "node_image" / "consortium_node"

# `measurements:` followed by either a flow list on the same line or a block list (its items,
# plus comment and blank lines between them).
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)measurements:[ \t]*(?:#[^\n]*)?\n"
    r"(?P<items>(?:(?P=indent)[ \t]*(?:-[^\n]*|#[^\n]*)?\n)+)",
    re.MULTILINE,
)
_FLOW = re.compile(r"^[ \t]*measurements:[ \t]*\[[^\]\n]*\]", re.MULTILINE)
_HEX = re.compile(r"\b[0-9a-f]{64}\b")


def _span(text: str) -> tuple[int, int]:
    for pattern in (_FLOW, _BLOCK):
        match = pattern.search(text)
        if match:
            return match.start(), match.end()
    raise SystemExit(f"{SAMPLE}: no `measurements:` list found")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the sample is stale")
    parser.add_argument("--file", type=Path, default=SAMPLE, help="sample to rewrite")
    args = parser.parse_args(argv)
    path: Path = args.file

    current = measure_tree(PACKAGE)
    text = path.read_text(encoding="utf-8")
    start, end = _span(text)
    found = _HEX.findall(text, start, end)
    if len(found) != 1:
        print(
            f"{path}: expected exactly one 64-hex entry under `measurements:`, found {len(found)}",
            file=sys.stderr,
        )
        return 2
    if found[0] == current:
        print(f"{path}: measurement is current ({current})")
        return 0
    if args.check:
        print(
            f"{path}: stale measurement {found[0]}; this build measures {current}.\n"
            f"Run scripts/update-sample-measurement.py to rewrite it.",
            file=sys.stderr,
        )
        return 1
    section = _HEX.sub(current, text[start:end])
    path.write_text(text[:start] + section + text[end:], encoding="utf-8")
    print(f"{path}: measurement {found[0]} -> {current}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
