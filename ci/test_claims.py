"""Claims the notebooks' own numbers must meet (docs/design.md §7), checked after the CI run.

Each notebook writes its key numbers to ``<out>/metrics/NN.json`` (``mmsa.book.save_metrics``);
``ci/claims.yaml`` states what they must satisfy, with a reason.  ``<out>`` is
``$MMSA_BOOK_OUT`` (``build/smoke`` in CI) or ``build``.  ``$MMSA_BOOK_ONLY`` (set by
``python -m mmsa.book test --only 00 01``) limits the claims to those notebooks.
"""
import json
import math
import operator
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("MMSA_BOOK_OUT", ROOT / "build"))
ONLY = set(os.environ.get("MMSA_BOOK_ONLY", "").split())
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
CLAIMS = yaml.safe_load((ROOT / "ci" / "claims.yaml").read_text()) or {}


def lookup(data: dict, key: str):
    value = data
    for part in key.split("."):
        if part not in value:
            raise KeyError(f"{key!r} not in metrics (have {sorted(value)})")
        value = value[part]
    return value


CASES = [(nb, c) for nb, claims in CLAIMS.items() for c in claims if not ONLY or nb in ONLY]


@pytest.mark.parametrize("nb,claim", CASES, ids=[f"{nb}:{c['key']}" for nb, c in CASES])
def test_claim(nb, claim):
    path = OUT / "metrics" / f"{nb}.json"
    assert path.exists(), f"{path} missing: notebook {nb} did not run or did not save its metrics"
    value = lookup(json.loads(path.read_text()), claim["key"])
    if claim["op"] == "finite":
        assert value is not None and math.isfinite(value), claim["why"]
        return
    target = claim["value"]
    if isinstance(target, str):  # another key of the same file
        target = lookup(json.loads(path.read_text()), target)
    assert OPS[claim["op"]](value, target), f"{claim['key']} = {value} !{claim['op']} {target}: {claim['why']}"
