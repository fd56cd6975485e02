"""mmsa.claims: one lookup by key paths (keys with '/' and '.' in them), the CI checks of
ci/claims.yaml, and the rules of the papers' claims on hand-made metrics."""
import pytest

from mmsa import claims, verdict


def test_lookup_takes_paths_whose_keys_hold_slashes_and_dots():
    data = {"paired": {"w/o DAM": {"0.5": {"boot_low": 0.01}}}}
    assert claims.lookup(data, ["paired", "w/o DAM", "0.5", "boot_low"]) == 0.01
    assert claims.lookup({"a.b": 1}, "a.b") == 1                 # a string is one key, never split
    with pytest.raises(claims.Missing, match="no paired → w/o STA"):
        claims.lookup(data, ["paired", "w/o STA", "0.5"])
    with pytest.raises(claims.Missing, match="08.json has no x"):
        claims.lookup(data, ["x"], where="08.json")
    with pytest.raises(TypeError):
        claims.lookup(data, [])


def test_compare_and_finite():
    assert claims.compare(1.0, "<", 2) and not claims.compare(2.0, "<", 2) and claims.compare(True, "==", True)
    assert claims.compare(0.3, "finite", None) and not claims.compare(float("nan"), "finite", None)
    assert not claims.compare(None, "finite", None)
    with pytest.raises(ValueError, match="unknown comparison"):
        claims.compare(1, "=>", 2)


def test_ci_claim_against_a_number_and_against_another_key():
    m = {"mae": {"baseline (emt_dlfr)": {"r05": 0.9, "complete": 0.8}}, "paired": {"w/o DAM": {"complete": {"boot_low": -0.01}}}}
    ok, msg = claims.check_ci_claim(m, {"key": ["mae", "baseline (emt_dlfr)", "r05"], "op": ">",
                                        "value": ["mae", "baseline (emt_dlfr)", "complete"], "why": "w"})
    assert ok, msg
    ok, msg = claims.check_ci_claim(m, {"key": ["paired", "w/o DAM", "complete", "boot_low"], "op": ">", "value": 0,
                                        "why": "the reason"})
    assert not ok and "fails > 0" in msg and "the reason" in msg
    assert claims.check_ci_claim(m, {"key": ["paired", "w/o DAM", "complete", "boot_low"], "op": "finite", "why": "w"})[0]
    with pytest.raises(claims.Missing):
        claims.check_ci_claim(m, {"key": ["paired", "w/o GAN"], "op": "finite", "why": "w"})


def test_ci_claims_file_is_well_formed():
    cases = claims.ci_claims()
    assert len(cases) >= 50
    for nb, c in cases:
        assert len(nb) == 2 and nb.isdigit(), nb
        assert isinstance(c["key"], list) and c["key"], c          # a path, never a dotted string
        assert c["op"] in claims.OPS or c["op"] == "finite", c
        assert c["op"] == "finite" or "value" in c, c
        assert not isinstance(c.get("value"), str), c                 # another key is a list too
        assert c["why"], c
    keys = {(nb, tuple(c["key"])) for nb, c in cases}
    assert ("08", ("paired", "w/o DAM", "complete", "boot_low")) in keys


def test_verdicts_extend_the_decision_rule():
    assert claims.VERDICTS[:5] == verdict.VERDICTS
    assert set(claims.DECIDED) <= set(verdict.VERDICTS)


# --------------------------------------------------------------------------- "What we found"
def test_expectations_file_is_well_formed_and_every_chapter_has_findings():
    own = claims.paper_claims(claims.EXPECTATIONS)
    assert own and all(c.get("kind") == "expectation" for c in own)
    assert claims.validate(own, claims.load_paper_tables()) == []
    for nn in [f"{i:02d}" for i in range(11)]:
        assert claims.chapter_claims(nn), f"chapter {nn} states no expectation a run decides"


def test_every_chapter_closes_with_its_generated_findings():
    """'## What we found' and the code cell that generates it, right before the Summary."""
    import json

    for nb in sorted((claims.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        heads = ["".join(c["source"]).split("\n")[0] for c in cells]
        i = heads.index("## What we found")
        assert heads[i + 2] == "## Summary", nb.name
        assert f'show_findings("{nb.name[:2]}", mmsa.book.metrics_dir())' in "".join(cells[i + 1]["source"]), nb.name


def _write_metrics(folder, nn, data):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{nn}.json").write_text(json.dumps(data))
    return folder


def test_findings_decide_by_the_paired_interval_and_print_the_mde(tmp_path, monkeypatch):
    rule = {"kind": "paired", "sign": 1, "diff": ["99", "d"], "low": ["99", "lo"], "high": ["99", "hi"]}
    fake = [{"kind": "expectation", "paper": "the book", "claim": "A beats B", "paper_text": "—", "source": "s",
             "where": ["99", "d"], "rule": rule, "why": "w"}]
    monkeypatch.setattr(claims, "chapter_claims", lambda nn: fake)
    full = _write_metrics(tmp_path / "build" / "metrics", "99", {"d": 0.05, "lo": 0.01, "hi": 0.09})
    (row,) = claims.findings("99", full, tables={})
    assert row["verdict"] == "reproduced" and row["measured"] == "+0.050"
    _write_metrics(full, "99", {"d": 0.05, "lo": -0.02, "hi": 0.12})
    (row,) = claims.findings("99", full, tables={})
    # half-width 0.07 = 1.96 SE  ->  MDE = 2.80 SE = 0.07 / 1.96 * 2.80 ≈ 0.100
    assert row["verdict"] == "inconclusive" and "0.100" in row["what it means"]
    small = _write_metrics(tmp_path / "build" / "classroom" / "metrics", "99", {"d": 0.05, "lo": 0.01, "hi": 0.09})
    (row,) = claims.findings("99", small, tables={})
    assert row["verdict"] == "reproduced (reduced run: needs the full run)"
    md = claims.findings_markdown("99", small)
    assert "needs the full run" in md and "| A beats B | +0.050 | **reproduced" in md
    _write_metrics(full, "99", {"d": 0.05})
    (row,) = claims.findings("99", full, tables={})
    assert row["verdict"] == "inconclusive" and "no paired interval saved" in row["detail"]
