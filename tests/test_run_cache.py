"""The run cache's code hash (mmsa.experiment.source_hash) follows what training imports, found
statically: analysis modules never change it, training code always does -- no list to keep up."""
import shutil
from pathlib import Path

from mmsa import experiment

PACKAGE = Path(experiment.__file__).resolve().parent


def _copy(tmp_path) -> Path:
    root = tmp_path / "mmsa"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_analysis_code_does_not_change_the_hash_training_code_does(tmp_path):
    root = _copy(tmp_path)
    before = experiment.source_hash("dast_gan", root)
    assert before == experiment.source_hash("dast_gan", PACKAGE)   # same files, same hash
    files = {f.relative_to(root).as_posix() for f in experiment.training_sources("dast_gan", root)}
    assert {"train.py", "training.py", "missing.py", "data/loader.py", "models/dast_gan.py",
            "models/emt_dlfr.py", "fusion/dam.py"} <= files
    assert not files & {"probes.py", "viz.py", "robustness.py", "mechanisms.py", "efficiency.py", "cli.py",
                        "book/__init__.py", "models/cmsta_cg.py", "models/ufen_mtfn.py"}
    (root / "probes.py").write_text((root / "probes.py").read_text() + "\n# an analysis edit\n")
    (root / "new_analysis.py").write_text("from mmsa import probes, train\n")     # a new analysis module
    (root / "models" / "cmsta_cg.py").write_text((root / "models" / "cmsta_cg.py").read_text() + "\n# other\n")
    assert experiment.source_hash("dast_gan", root) == before
    (root / "missing.py").write_text((root / "missing.py").read_text() + "\n# a training edit\n")
    edited = experiment.source_hash("dast_gan", root)
    assert edited != before


def test_a_new_training_dependency_changes_the_hash(tmp_path):
    root = _copy(tmp_path)
    (root / "helper.py").write_text("SCALE = 1.0\n")
    before = experiment.source_hash("lf_dnn", root)        # helper.py is not imported: not hashed
    train = root / "train.py"
    train.write_text(train.read_text().replace("from __future__ import annotations\n",
                                               "from __future__ import annotations\n\nfrom mmsa import helper  # noqa\n", 1))
    after = experiment.source_hash("lf_dnn", root)
    assert after != before
    (root / "helper.py").write_text("SCALE = 2.0\n")          # now a training dependency: its edits count
    assert experiment.source_hash("lf_dnn", root) != after


def test_a_finished_run_records_the_thread_count_it_was_trained_with(tmp_path):
    """Training is not bit-reproducible across thread counts and the key does not include them:
    done.json says how many threads trained the run, and a loaded run reports it."""
    import json

    import torch

    from mmsa.data.synthetic import synthetic_splits

    data = synthetic_splits("mosi", sizes=(16, 8, 8), seed=0, root=tmp_path, lengths=(16, 8, 8), verbose=False)
    p = experiment.Protocol(sizes=(16, 8, 8), lengths=(16, 8, 8), epochs=1, data_dir=str(tmp_path))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        t = experiment.fit("lf_dnn", p, seed=1, data=data, root=str(tmp_path / "runs"))
    finally:
        torch.set_num_threads(before)
    assert t.cached is False and t.threads == 1
    done = next((tmp_path / "runs").glob("lf_dnn-s1-*/done.json"))
    assert json.loads(done.read_text())["threads"] == 1
    again = experiment.fit("lf_dnn", p, seed=1, data=data, root=str(tmp_path / "runs"))
    assert again.cached is True and again.threads == 1
