"""Claims the notebooks' own numbers must meet (docs/design.md §7), checked after the CI run.

Each notebook writes its key numbers to ``<out>/metrics/NN.json`` (``mmsa.book.save_metrics``);
``ci/claims.yaml`` states what they must satisfy, with a reason; ``mmsa.claims`` (the engine that
also evaluates the papers' claims for the reproduction report) reads the file, looks the keys up
(paths: lists of keys, so ``w/o DAM`` is one key) and compares.  ``<out>`` is ``$MMSA_BOOK_OUT``
(``build/smoke`` in CI) or ``build``.  ``$MMSA_BOOK_ONLY`` (set by
``python -m mmsa.book test --only 00 01``) limits the claims to those notebooks.
"""
import json
import os
from pathlib import Path

import pytest

from mmsa import claims

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("MMSA_BOOK_OUT", ROOT / "build"))
ONLY = set(os.environ.get("MMSA_BOOK_ONLY", "").split())
CASES = [(nb, c) for nb, c in claims.ci_claims(ROOT / "ci" / "claims.yaml") if not ONLY or nb in ONLY]


@pytest.mark.parametrize("nb,claim", CASES, ids=[f"{nb}:" + "|".join(claims.as_path(c["key"])) for nb, c in CASES])
def test_claim(nb, claim):
    path = OUT / "metrics" / f"{nb}.json"
    assert path.exists(), f"{path} missing: notebook {nb} did not run or did not save its metrics"
    ok, message = claims.check_ci_claim(json.loads(path.read_text()), claim)
    assert ok, message
