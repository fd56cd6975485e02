"""mmsa.book: errors a user can act on, presets, clean, CI copies, --inplace that never commits a failure.

Most tests work on a throw-away repository in ``tmp_path`` (``repo_root`` patched), so they
never touch the real notebooks/ or figures/.
"""
import json

import nbformat
import pytest

from mmsa import book
from mmsa.book import params, paths, runner


def _notebook(params_src: str, *cells: str, outputs=None):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), p] + [nbformat.v4.new_code_cell(c) for c in cells]
    for cell, outs in zip(nb.cells[2:], outputs or []):
        cell.outputs = outs
    return nb


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A minimal book: notebooks 00 and 01, ci/00.yaml, a preset ci/gpu/00.yaml, figures/."""
    for d in ("notebooks", "mmsa", "figures", "ci/gpu"):
        (tmp_path / d).mkdir(parents=True)
    nbformat.write(_notebook("epochs = 25\nlr = 5e-3\nseeds = [1, 2]\ndevice = 'cpu'\nquick = False\n", "x = 1"),
                   tmp_path / "notebooks" / "00_first.ipynb")
    nbformat.write(_notebook("n = 3\n", "y = 2"), tmp_path / "notebooks" / "01_second.ipynb")
    (tmp_path / "ci" / "00.yaml").write_text("epochs: 2\n")
    (tmp_path / "ci" / "gpu" / "00.yaml").write_text("epochs: 40\ndevice: cuda\n")
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    monkeypatch.delenv(book.ENV_OUT, raising=False)
    return tmp_path


def _error(capsys, argv) -> str:
    assert runner.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- errors, exit status 2


def test_unknown_notebook_number_names_it_and_the_valid_ones(repo, capsys):
    err = _error(capsys, ["run", "--only", "07"])
    assert "'07'" in err and "00_first" in err and "01_second" in err


def test_unknown_parameter_names_it_and_the_valid_ones(repo, capsys):
    err = _error(capsys, ["run", "--only", "00", "-p", "epoch", "3"])
    assert "epoch (did you mean epochs?)" in err and "epochs, lr, seeds, device, quick" in err


def test_bad_yaml_value_names_the_parameter_and_value(repo, capsys):
    err = _error(capsys, ["run", "--only", "00", "-p", "seeds", "[1, 2"])
    assert "-p seeds '[1, 2'" in err and "not a valid YAML value" in err


def test_value_of_the_wrong_type_is_an_error(repo, capsys):
    err = _error(capsys, ["run", "--only", "00", "-p", "epochs", "ten"])
    assert "epochs = 'ten'" in err and "an integer" in err and "25" in err
    err = _error(capsys, ["run", "--only", "00", "-p", "seeds", "3"])
    assert "a list" in err


def test_unknown_preset_lists_the_available_ones(repo, capsys):
    err = _error(capsys, ["run", "--preset", "tpu"])
    assert "'tpu'" in err and "available presets: classroom, gpu" in err  # classroom: the CI values


def test_bad_yaml_in_a_parameter_file_names_the_file(repo, capsys):
    (repo / "ci" / "01.yaml").write_text("n: [1,\n")
    err = _error(capsys, ["run", "--smoke", "--only", "01"])
    assert "01.yaml" in err and "not valid YAML" in err


def test_inplace_refuses_parameter_overrides(repo, capsys):
    err = _error(capsys, ["run", "--inplace", "--only", "00", "-p", "epochs", "3"])
    assert "--inplace" in err


def test_clean_on_a_file_that_is_not_a_notebook(repo, capsys):
    (repo / "README.md").write_text("x")
    err = _error(capsys, ["clean", str(repo / "README.md")])
    assert "README.md" in err and "not a notebook" in err


# --------------------------------------------------------------------------- parameters


def test_preset_parameters_merged_under_p_overrides(repo):
    (nb0, p0, src0), (nb1, p1, _) = params.plan(preset="gpu", params=None)
    assert (nb0.name, p0, src0) == ("00_first.ipynb", {"epochs": 40, "device": "cuda"}, "ci/gpu/00.yaml")
    assert p1 == {}  # no ci/gpu/01.yaml: the defaults
    [(_, p, _)] = params.plan(["0"], preset="gpu", params={"epochs": 7})
    assert p == {"epochs": 7, "device": "cuda"}
    [(_, p, _)] = params.plan(["00"], smoke=True)
    assert p == {"epochs": 2}


def test_numbers_yaml_reads_as_strings_are_accepted_where_the_default_is_a_number(repo):
    # YAML 1.1 reads 1e-3 as the string "1e-3"
    [(_, p, _)] = params.plan(["00"], params={"lr": params.parse_value("lr", "1e-3"), "quick": True})
    assert p == {"lr": 1e-3, "quick": True}
    with pytest.raises(book.BookError, match="quick"):
        params.plan(["00"], params={"quick": 1})


# --------------------------------------------------------------------------- clean


def _dirty(repo):
    nb = _notebook("epochs = 25\n", "print(1)", "print(2)", outputs=[
        [nbformat.v4.new_output("stream", name="stderr", text=(
            "/opt/env/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: x\n"
            "/tmp/ipykernel_4242/123456.py:3: UserWarning: y\n"))],
        [nbformat.v4.new_output("stream", name="stdout", text=(
            "metrics written to /srv/ci/checkout/build/metrics/00.json\n"
            f"root {repo}\ntemp /tmp/tmpab12_cd/x.wav\n"))],
    ])
    injected = nbformat.v4.new_code_cell("# Parameters\nepochs = 1\n")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(2, injected)
    nb.metadata["papermill"] = {"duration": 3.2, "parameters": {"epochs": 1}}
    for c in nb.cells:
        c.metadata["papermill"] = {"duration": 0.1}
        c.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    raw = json.loads(nbformat.writes(nb))
    raw["cells"][1]["id"] = raw["cells"][0]["id"]  # a duplicate id (nbformat.write would repair it)
    path = repo / "notebooks" / "02_dirty.ipynb"
    path.write_text(json.dumps(raw, indent=1))
    return path


def test_clean_check_lists_problems_without_writing(repo, capsys):
    path = _dirty(repo)
    before = path.read_text()
    assert runner.main(["clean", "--check"]) == 1
    out = capsys.readouterr().out
    assert path.read_text() == before
    assert "02_dirty" in out and "00_first" not in out.split("clean --check")[0]
    for what in ("injected-parameters cell removed: '# Parameters epochs = 1'", "papermill run metadata",
                 "execution metadata", "duplicate cell id", "absolute paths"):
        assert what in out, what


def test_clean_fixes_everything_and_is_idempotent(repo, capsys):
    path = _dirty(repo)
    assert runner.main(["clean", str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "papermill" not in nb.metadata
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells)
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    text = "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "<site-packages>/tqdm/auto.py:21" in text and "<cell>:3: UserWarning" in text
    assert "<repo>/build/metrics/00.json" in text and "root <repo>\n" in text and "<tmp>/x.wav" in text
    assert "/opt/" not in text and "/srv/" not in text and str(repo) not in text
    first = path.read_text()
    assert runner.main(["clean", "--check", str(path)]) == 0
    assert runner.main(["clean", str(path)]) == 0 and path.read_text() == first


def test_clean_reports_paths_it_cannot_rewrite(repo, capsys):
    nb = _notebook("n = 1\n", "print(1)", outputs=[[nbformat.v4.new_output("stream", text="saved /home/ada/x.pkl\n")]])
    path = repo / "notebooks" / "03_home.ipynb"
    nbformat.write(nb, path)
    assert runner.main(["clean", str(path)]) == 1
    assert runner.main(["clean", "--check", str(path)]) == 1
    assert "'/home/ada/x.pkl'" in capsys.readouterr().out


# --------------------------------------------------------------------------- CI copies


def test_ci_copy_has_the_parameters_and_no_committed_outputs(repo):
    nb = _notebook("epochs = 25\n", "# NBVAL_CHECK_OUTPUT\nprint(epochs)", "print(3)",
                   outputs=[[nbformat.v4.new_output("stream", text="25\n")],
                            [nbformat.v4.new_output("stream", text="3\n")]])
    src = repo / "notebooks" / "02_ci.ipynb"
    nbformat.write(nb, src)
    copy = nbformat.read(runner.prepare_ci(src, {"epochs": 2}, repo / "ci_copy.ipynb"), as_version=4)
    injected = [c for c in copy.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "epochs = 2" in injected[0].source
    assert all(not c.outputs for c in copy.cells if c.cell_type == "code")
    assert "NBVAL_CHECK_OUTPUT" not in "".join(c.source for c in copy.cells)  # committed output is not CI's
    same = nbformat.read(runner.prepare_ci(src, {}, repo / "ci_default.ipynb"), as_version=4)
    checked = [c for c in same.cells if "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and checked[0].outputs[0].text == "25\n"  # defaults: compared with the committed output


# --------------------------------------------------------------------------- run --inplace (real kernels)


WRITE = ("import json, os, pathlib\nout = pathlib.Path(os.environ['MMSA_BOOK_OUT'])\n"
         "(out / 'figures').mkdir(parents=True, exist_ok=True)\n"
         "(out / 'figures' / '00_plot.png').write_bytes(b'new')\n"
         "(out / 'metrics').mkdir(parents=True, exist_ok=True)\n"
         "m = out / 'metrics' / '00.json'  # merged like mmsa.book.save_metrics\n"
         "m.write_text(json.dumps({**(json.loads(m.read_text()) if m.exists() else {}), 'fresh': 1}))\n"
         "print(os.getcwd())")


def test_inplace_never_commits_a_failed_notebook(repo, capsys):
    nb = _notebook("fail = True\n", WRITE, "assert not fail, 'boom'")
    path = repo / "notebooks" / "00_first.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    (repo / "figures" / "00_plot.png").write_bytes(b"committed")
    assert runner.run(["00"], inplace=True) == 1
    out = capsys.readouterr().out
    assert "[1/1] 00_first FAILED" in out and "AssertionError: boom" in out
    assert path.read_text() == before
    assert (repo / "figures" / "00_plot.png").read_bytes() == b"committed"
    assert book.out_dir() is None  # the environment variable is restored


def test_inplace_writes_notebook_and_figures_together(repo, capsys):
    path = repo / "notebooks" / "00_first.ipynb"
    nbformat.write(_notebook("fail = False\n", WRITE), path)
    (repo / "figures" / "00_plot.png").write_bytes(b"committed")
    (repo / "figures" / "00_renamed_away.png").write_bytes(b"old")
    (repo / "build" / "metrics").mkdir(parents=True)
    (repo / "build" / "metrics" / "00.json").write_text(json.dumps({"stale": 1}))
    assert runner.run(["00"], inplace=True) == 0
    out = capsys.readouterr().out
    assert "[1/1] 00_first done in" in out and "(total" in out
    assert (repo / "figures" / "00_plot.png").read_bytes() == b"new"
    assert not (repo / "figures" / "00_renamed_away.png").exists()
    assert json.loads((repo / "build" / "metrics" / "00.json").read_text()) == {"fresh": 1}
    assert runner.main(["clean", "--check", str(path)]) == 0  # committed clean: no papermill metadata, no paths
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[2].outputs[0].text.strip() == "<repo>"


def test_default_run_leaves_committed_figures_alone(repo, capsys):
    path = repo / "notebooks" / "00_first.ipynb"
    nbformat.write(_notebook("fail = False\n", WRITE), path)
    before = path.read_text()
    (repo / "figures" / "00_plot.png").write_bytes(b"committed")
    assert runner.run(["00"]) == 0
    assert path.read_text() == before
    assert (repo / "figures" / "00_plot.png").read_bytes() == b"committed"
    assert (repo / "build" / "figures" / "00_plot.png").read_bytes() == b"new"
    assert (repo / "build" / "notebooks" / "00_first.ipynb").exists()


# --------------------------------------------------------------------------- solutions notebooks


@pytest.fixture
def with_solution(repo):
    """notebooks/solutions/00_solutions.ipynb with ci/solutions/00.yaml (CI mode) and a preset file."""
    (repo / "notebooks" / "solutions").mkdir()
    (repo / "ci" / "solutions").mkdir()
    (repo / "ci" / "gpu" / "solutions").mkdir()
    path = repo / "notebooks" / "solutions" / "00_solutions.ipynb"
    nbformat.write(_notebook("epochs = 25\nseeds = [1, 2, 3]\n", "print(epochs)"), path)
    (repo / "ci" / "solutions" / "00.yaml").write_text("epochs: 3\nseeds: [1]\n")
    (repo / "ci" / "gpu" / "solutions" / "00.yaml").write_text("epochs: 50\n")
    return path


def test_solutions_are_not_chapters_and_follow_their_chapter(with_solution):
    assert [p.name for p in params.notebooks()] == ["00_first.ipynb", "01_second.ipynb"]
    assert params.solutions() == [with_solution] and params.solutions(["0"]) == [with_solution]
    assert params.solutions(["01"]) == []
    names = [(nb.name, p, src) for nb, p, src in params.plan(smoke=True, with_solutions=True)]
    assert names == [("00_first.ipynb", {"epochs": 2}, "ci/00.yaml"), ("01_second.ipynb", {}, "ci/01.yaml"),
                     ("00_solutions.ipynb", {"epochs": 3, "seeds": [1]}, "ci/solutions/00.yaml")]
    assert [nb.name for nb, _, _ in params.plan(["01"], smoke=True, with_solutions=True)] == ["01_second.ipynb"]
    [*_, (nb, p, src)] = params.plan(["00"], preset="gpu", with_solutions=True)
    assert (nb, p, src) == (with_solution, {"epochs": 50}, "ci/gpu/solutions/00.yaml")
    assert len(params.plan(smoke=True)) == 2  # run without --solutions: chapters only


def test_ci_solutions_folder_is_not_a_preset(with_solution, capsys):
    assert params.presets() == ["classroom", "gpu"]  # classroom: the CI values ci/NN.yaml (mmsa.classroom)
    err = _error(capsys, ["run", "--preset", "solutions"])
    assert "'solutions'" in err and "available presets: classroom, gpu" in err


def test_a_wrong_parameter_in_ci_solutions_names_the_file(with_solution, capsys):
    (with_solution.parents[2] / "ci" / "solutions" / "00.yaml").write_text("epoch: 3\n")
    err = _error(capsys, ["run", "--smoke", "--only", "00", "--solutions"])
    assert "00_solutions" in err and "epoch (did you mean epochs?)" in err and "ci/solutions/00.yaml" in err


def test_test_runs_the_solutions_after_the_chapters_in_ci_mode(with_solution, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runner.subprocess, "call", lambda cmd, **kw: calls.append([str(c) for c in cmd]) or 0)
    assert runner.test(["00"], skip_unit=True) == 0
    executed = [c[-1] for c in calls if "--nbval-lax" in c]
    smoke = with_solution.parents[2] / "build" / "smoke" / "notebooks"
    assert executed == [str(smoke / "00_first.ipynb"), str(smoke / "solutions" / "00_solutions.ipynb")]
    copy = nbformat.read(executed[1], as_version=4)
    injected = [c.source for c in copy.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "epochs = 3" in injected[0] and "seeds = [1]" in injected[0]


def test_run_solutions_keeps_the_chapters_metrics_and_figures(with_solution, capsys):
    nbformat.write(_notebook("fail = False\n", WRITE), with_solution.parents[1] / "00_first.ipynb")
    nbformat.write(_notebook("epochs = 25\n", "import os; print(sorted(os.listdir(os.environ['MMSA_BOOK_OUT'] + '/figures')))"),
                   with_solution)
    assert runner.run(["00"], with_solutions=True) == 0
    out = capsys.readouterr().out
    assert "[2/2] 00_solutions done" in out
    build = with_solution.parents[2] / "build"
    assert json.loads((build / "metrics" / "00.json").read_text()) == {"fresh": 1}
    executed = nbformat.read(build / "notebooks" / "solutions" / "00_solutions.ipynb", as_version=4)
    assert "00_plot.png" in executed.cells[2].outputs[0].text  # the chapter's figure was not removed


# --------------------------------------------------------------------------- figures on the page
def test_run_puts_figures_on_the_page_whatever_mplbackend_says(repo, monkeypatch, capsys):
    """The kernels of `run` use the inline backend even where the caller exports MPLBACKEND=Agg
    (as CI does), so an executed notebook carries its figures as image outputs."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbformat.write(_notebook("n = 3\n", "import matplotlib.pyplot as plt\nplt.plot(range(n))\nplt.show()"),
                   repo / "notebooks" / "00_first.ipynb")
    assert runner.run(["00"]) == 0
    images, saves = runner.figure_counts(repo / "build" / "notebooks" / "00_first.ipynb")
    assert (images, saves) == (1, 0)
    assert runner.os.environ["MPLBACKEND"] == "Agg"      # the caller's environment is restored


_CHAPTERS = sorted((book.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", _CHAPTERS, ids=[p.stem for p in _CHAPTERS])
def test_committed_chapter_shows_every_figure_it_saves(path):
    images, saves = runner.figure_counts(path)
    assert images >= saves, f"{path.name}: {images} image output(s) for {saves} save_figure call(s)"


def test_index_is_committed_without_machine_specific_output():
    nb = nbformat.read(book.repo_root() / "notebooks" / "index.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_repo_root_is_found_from_the_package_whatever_the_working_directory(tmp_path, monkeypatch):
    """A notebook opened outside the repository (JupyterLab's root elsewhere) still finds the book."""
    from mmsa.book import paths

    monkeypatch.chdir(tmp_path)
    root = paths.repo_root()
    assert (root / "notebooks").is_dir() and (root / "mmsa" / "book" / "paths.py").is_file()
