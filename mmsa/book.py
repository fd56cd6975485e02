"""Run, test and clean the textbook's notebooks (docs/design.md §7).

    python -m mmsa.book run --only 00 01          # default parameters; outputs under build/
    python -m mmsa.book run --only 03 -p epochs 30 -p seeds "[1, 2]"
    python -m mmsa.book run --smoke --only 00     # CI parameters from ci/NN.yaml -> build/smoke/
    python -m mmsa.book run --preset gpu          # parameters from ci/gpu/NN.yaml -> build/gpu/
    python -m mmsa.book run --preset classroom    # the CI parameters ci/NN.yaml -> build/classroom/
    python -m mmsa.book run --inplace --only 00   # default run, then notebook + figures committed
    python -m mmsa.book run --only 02 --solutions # chapter 02, then notebooks/solutions/02_solutions.ipynb
    python -m mmsa.book run                       # the main job: every notebook, in order
    python -m mmsa.book test [--only 00 01] [--skip-unit]   # what CI runs (.ci/run), solutions included
    python -m mmsa.book clean [--check] [PATH ...]          # strip volatile metadata
    python -m mmsa.book site [--only 09] [--from DIR]       # the website: build/site/_build/html/

Where things go (OUT = ``build/``, ``build/smoke/`` or ``build/<preset>/``):

    =====================  ==================  ==============  ==============
    command                executed notebook   figures         key numbers
    =====================  ==================  ==============  ==============
    run                    OUT/notebooks/      OUT/figures/    OUT/metrics/
    run --inplace          notebooks/ (*)      figures/ (*)    build/metrics/
    test                   (not kept)          OUT/figures/    OUT/metrics/
    a notebook opened in   itself              build/figures/  build/metrics/
    Jupyter by hand, or
    run by papermill
    the same with          itself              build/classroom/figures/, build/classroom/metrics/
    MMSA_PRESET=classroom
    =====================  ==================  ==============  ==============

(*) only after the notebook ran to the end: it is executed into ``build/`` first, then the
notebook (cleaned, see ``clean``) and the figures it saved are copied together.  Nothing else
writes the committed ``figures/``: not a default run, not a notebook run by hand or by papermill
directly (its setup cell prints where its figures go).  ``run`` and ``test`` tell a notebook where to
write by the environment variable ``MMSA_BOOK_OUT`` (:data:`ENV_OUT`), read by
:func:`figures_dir` and :func:`metrics_dir`.

Every user mistake (an unknown notebook number, parameter name or preset, a value that is not
YAML or has the wrong type) is one message naming the bad value and the valid ones, exit status 2.
Parameter names are checked against ``papermill.inspect_notebook``: papermill itself would
silently accept a typo.

Inside a notebook, the first code cell after ``parameters`` calls :func:`setup`, and
figures/numbers are saved with :func:`save_figure` / :func:`save_metrics`.

The solutions of each chapter's exercises, ``notebooks/solutions/NN_solutions.ipynb``, are run
like the chapters, after them: their CI parameters are ``ci/solutions/NN.yaml`` (a preset's
``ci/<preset>/solutions/NN.yaml``); ``--only NN`` selects a chapter together with its solutions.
They save neither figures nor metrics (those belong to the chapters).
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ENV_OUT = "MMSA_BOOK_OUT"  # set by `run`/`test`: the folder that receives figures/ and metrics/
ENV_ONLY = "MMSA_BOOK_ONLY"  # set by `test --only`: the notebooks whose claims are checked
# the matplotlib backend of the kernels `run` starts, whatever MPLBACKEND says in the caller's
# environment (CI exports Agg): an executed notebook carries its figures as image outputs
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# seaborn's "colorblind" palette (Okabe-Ito-like), the default colour cycle of every figure
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
              "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]


class BookError(Exception):
    """A user mistake: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- inside a notebook


def repo_root() -> Path:
    """The repository root (holds notebooks/ and mmsa/); falls back to the current directory."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "notebooks").is_dir() and (p / "mmsa").is_dir():
            return p
    return Path.cwd()


def out_dir() -> Path | None:
    """``$MMSA_BOOK_OUT`` when a runner set it, else ``None`` (a notebook run by hand)."""
    out = os.environ.get(ENV_OUT)
    return Path(out) if out else None


def figures_dir() -> Path:
    """``$MMSA_BOOK_OUT/figures`` under ``run``/``test``; ``build/figures`` by hand.

    Only ``run --inplace`` writes the committed ``figures/`` (it copies them from ``build/``).
    """
    out = out_dir()
    path = out / "figures" if out else repo_root() / "build" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def metrics_dir() -> Path:
    """``$MMSA_BOOK_OUT/metrics`` under ``run``/``test``; ``build/metrics`` by hand."""
    out = out_dir()
    path = out / "metrics" if out else repo_root() / "build" / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when inside it (for printing in notebooks)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def setup(threads=None, notebook: str | None = None, style: bool = True, quiet: bool = True) -> Path:
    """Notebook preamble: cd to the repo root (so data/ resolves), preset, threads, plot style.

    A chapter calls ``root = mmsa.book.setup(globals(), "NN")`` right after its parameters cell
    (``"solutions/NN"`` in a solutions notebook): with ``MMSA_PRESET=classroom`` in the
    environment it replaces the parameters still at their defaults by the chapter's small
    values, printing what changed (:mod:`mmsa.classroom`); ``threads`` is then read from those
    parameters.  ``setup(threads)`` (a number) also works, without presets.  Setup prints where
    the notebook's figures and key numbers go.

    ``style``: the book's matplotlib defaults (fonts >= 8 pt, colour-blind-safe colour cycle).
    ``quiet``: hide transformers' weight-loading bars and load reports and tqdm's "IProgress not
    found" warning, which a reader cannot act on (the packaged MiniLM has a pooler the encoders do
    not use; without ipywidgets the trainer prints plain-text bars).
    """
    root = repo_root()
    os.chdir(root)
    if isinstance(threads, dict):  # setup(globals(), "NN"): the notebook's own namespace
        from mmsa import classroom

        classroom.apply(threads, notebook)
        threads = threads.get("threads")
    elif os.environ.get("MMSA_PRESET", "").strip().lower() not in ("", "full", "default", "none"):
        print(f"[mmsa.book] MMSA_PRESET={os.environ['MMSA_PRESET'].strip()} is ignored: this notebook's setup cell "
              "does not pass its parameters (setup(globals(), \"NN\") does)", flush=True)
    print(f"[mmsa.book] figures -> {display_path(figures_dir())}/, key numbers -> {display_path(metrics_dir())}/"
          + ("" if out_dir() else " (the committed figures/ only by `python -m mmsa.book run --inplace`)"), flush=True)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if style:
        import matplotlib
        from cycler import cycler

        matplotlib.rcParams.update({
            "figure.dpi": 100, "savefig.dpi": 110, "figure.figsize": (7, 3.6),
            "axes.spines.top": False, "axes.spines.right": False,
            "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.titlesize": 10,
            "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
            "axes.prop_cycle": cycler(color=COLORBLIND), "image.cmap": "viridis",
        })
    if quiet:
        import warnings

        # tqdm.auto without ipywidgets; the trainer falls back to plain-text bars by itself
        warnings.filterwarnings("ignore", message="IProgress not found")
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass
        else:
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    return root


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as ``<figures>/<name>.png`` (stable names: ``NN_what``)."""
    path = figures_dir() / (name if name.endswith((".png", ".svg")) else f"{name}.png")
    fig.savefig(path, bbox_inches="tight")
    return path


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if hasattr(x, "item") and callable(x.item):  # 0-d torch tensor
        return x.item()
    return x


def _nn(notebook: str | int) -> str:
    return f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)


def save_metrics(notebook: str | int, values: dict) -> Path:
    """Merge ``values`` into ``<metrics>/NN.json`` (read by the claims checks)."""
    path = metrics_dir() / f"{_nn(notebook)}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(_jsonable(values))
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path


def load_metrics(notebook: str | int) -> dict:
    nn = _nn(notebook)
    path = metrics_dir() / f"{nn}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m mmsa.book run --only {nn}` first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- selecting and parameters


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``notebooks/NN_*.ipynb``, optionally only some (``["00", "3"]``)."""
    nbs = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return nbs
    by_number = {p.name[:2]: p for p in nbs}
    picked = []
    for o in only:
        key = str(o).removesuffix(".ipynb")
        key = f"{int(key):02d}" if key.isdigit() else key
        match = by_number.get(key) or next((p for p in nbs if p.stem == key), None)
        if match is None:
            raise BookError(f"no notebook {o!r} in notebooks/; the notebooks are "
                            + ", ".join(p.stem for p in nbs))
        if match not in picked:
            picked.append(match)
    return sorted(picked)


SOLUTIONS = "solutions"  # notebooks/solutions/ and ci/solutions/


def solutions(only: list[str] | None = None) -> list[Path]:
    """The solutions ``notebooks/solutions/NN_solutions.ipynb`` of the chapters ``notebooks(only)`` selects."""
    numbers = {p.name[:2] for p in notebooks(only)}
    folder = repo_root() / "notebooks" / SOLUTIONS
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.name[:2] in numbers)


def is_solution(nb: Path) -> bool:
    return nb.parent.name == SOLUTIONS


def presets() -> list[str]:
    """Parameter presets: folders ``ci/<NAME>/`` holding ``NN.yaml`` files (``ci/solutions/`` is not one)."""
    ci = repo_root() / "ci"
    found = sorted(p.name for p in ci.iterdir() if p.is_dir() and p.name != SOLUTIONS
                   and any(p.glob("[0-9][0-9].yaml"))) if ci.is_dir() else []
    return sorted({*found, CLASSROOM}) if (ci / "00.yaml").exists() else found


CLASSROOM = "classroom"  # the preset of the CI parameters ci/NN.yaml (mmsa.classroom; MMSA_PRESET=classroom)


def _load_yaml_file(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BookError(f"{path}: not valid YAML ({_first_line(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BookError(f"{path}: expected a mapping `name: value` per line, got {type(data).__name__}")
    return data


def _parameter_file(nb: Path, preset: str | None = None) -> str:
    """``ci/NN.yaml``, ``ci/<preset>/NN.yaml``; for a solutions notebook ``ci/[<preset>/]solutions/NN.yaml``."""
    parts = ["ci"] + ([preset] if preset else []) + ([SOLUTIONS] if is_solution(nb) else []) + [f"{nb.name[:2]}.yaml"]
    return "/".join(parts)


def smoke_parameters(nb: Path) -> dict:
    """Parameters for CI mode: ``ci/NN.yaml`` (or ``{}`` when the defaults are already small)."""
    path = repo_root() / _parameter_file(nb)
    return _load_yaml_file(path) if path.exists() else {}


def preset_parameters(nb: Path, preset: str) -> dict:
    """Parameters of ``ci/<preset>/NN.yaml``; ``{}`` (the defaults) when that file does not exist.

    ``classroom`` is the preset of the CI parameters ``ci/NN.yaml``, run under ``build/classroom/``.
    """
    if preset == CLASSROOM and not (repo_root() / "ci" / preset).is_dir():
        from mmsa import classroom

        return classroom.values(nb)[0]
    folder = repo_root() / "ci" / preset
    if not re.fullmatch(r"[\w-]+", preset) or not folder.is_dir() or preset == SOLUTIONS:
        have = presets()
        raise BookError(f"no preset {preset!r} (no folder ci/{preset}/ with NN.yaml files); available presets: "
                        + (", ".join(have) if have else "none yet") + "; CI parameters are --smoke")
    path = repo_root() / _parameter_file(nb, preset)
    return _load_yaml_file(path) if path.exists() else {}


def _first_line(err) -> str:
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]  # YAML errors
    text = ", ".join(p for p in parts if p) or str(err).split("\n")[0].strip()
    return text or type(err).__name__


def parse_value(name: str, text: str):
    """A ``-p NAME VALUE`` value, parsed as YAML (``30``, ``[1, 2]``, ``cuda``, ``null``)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BookError(f"-p {name} {text!r}: not a valid YAML value ({_first_line(err)}); "
                        "examples: -p epochs 30, -p seeds '[1, 2]', -p device cuda, -p lr 1e-3") from None


def declared_parameters(nb: Path) -> dict:
    """``{name: default value}`` of the notebook's ``parameters`` cell (via papermill)."""
    import papermill

    declared = {}
    for name, info in papermill.inspect_notebook(str(nb)).items():
        try:
            declared[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            declared[name] = _UNKNOWN  # an expression: any value is accepted
    return declared


_UNKNOWN = object()
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list such as [1, 2]"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _coerce(value, default):
    """``value`` converted to the type of ``default`` where that is unambiguous, else ``None``.

    YAML reads ``1e-3`` as a string (it wants ``1.0e-3``); numbers in strings are accepted
    where the default is a number.
    """
    if default is _UNKNOWN or default is None:
        return value
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, (int, float)):
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value) if isinstance(default, float) or not value.strip().lstrip("+-").isdigit() else int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(default, int) and not isinstance(value, int):
            return None
        return value
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return None
        if default and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default):
            items = [_coerce(v, 0.0 if any(isinstance(d, float) for d in default) else 0) for v in value]
            return None if any(i is None for i in items) else items
        return list(value)
    if isinstance(default, dict):
        return value if isinstance(value, dict) else None
    return value


def check_parameters(nb: Path, params: dict, source: str = "-p") -> dict:
    """Unknown names and values of the wrong type are errors; returns the coerced parameters."""
    declared = declared_parameters(nb)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        import difflib

        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, declared, 1)) else u
                 for u in unknown]
        raise BookError(f"{nb.stem}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(hints)} (from {source}); its parameters are: {', '.join(declared)}")
    out = {}
    for name, value in params.items():
        default = declared[name]
        coerced = _coerce(value, default)
        if coerced is None and value is not None:
            raise BookError(f"{nb.stem}: parameter {name} = {value!r} (from {source}) should be "
                            f"{_kind(default)}, like its default {default!r}")
        if coerced is None and default is not None and default is not _UNKNOWN:
            raise BookError(f"{nb.stem}: parameter {name} cannot be null (from {source}); "
                            f"it should be {_kind(default)}, like its default {default!r}")
        problem = _out_of_range(name, coerced)
        if problem:
            raise BookError(f"{nb.stem}: parameter {name} = {coerced!r} (from {source}): {problem}")
        out[name] = coerced
    return out


# value rules by parameter name (checked before anything runs): counts must be >= 1, rates in [0, 1]
_COUNT = re.compile(r"(.*_)?(epochs|batch_size|batch|batches|d_model|ff_dim|fusion_layers|repeats|points|clips|"
                    r"threads|steps|sizes|lengths|boot|positions|samples|show)$")
_RATE = re.compile(r"(.*_)?(rate|rates|missing)$")


def _out_of_range(name: str, value) -> str | None:
    """Why ``value`` cannot be right for parameter ``name`` (None if it can): ``-p epochs 0`` would
    train nothing and save an untrained model's metrics, ``-p seeds []`` would run no seed."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if isinstance(value, (list, tuple)) and not value and (name.endswith(("seeds", "_grid")) or name == "models"):
        return "the list is empty (nothing would run)"
    if _COUNT.fullmatch(name) and "warmup" not in name and any(v < 1 for v in numbers):
        return "must be >= 1 (a count or size)"
    if _RATE.fullmatch(name) and any(not 0 <= v <= 1 for v in numbers):
        return "must lie in [0, 1] (a rate)"
    if name == "level" and any(not 0 < v < 1 for v in numbers):
        return "must lie in (0, 1) (a confidence level)"
    if name.startswith("lr") and any(v <= 0 for v in numbers):
        return "must be > 0 (a learning rate)"
    return None


def check_kernel(name: str) -> None:
    """``--kernel NAME`` must be an installed Jupyter kernel (checked before any notebook runs)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(manager.find_kernel_specs())) or "none"
        raise BookError(f"--kernel {name!r}: no such Jupyter kernel; installed kernels: {known} "
                        f"(list them with `jupyter kernelspec list`)") from None


def plan(only=None, smoke=False, preset=None, params: dict | None = None,
         with_solutions: bool = False) -> list[tuple[Path, dict, str]]:
    """``[(notebook, parameters, where they came from)]``, every name and value checked first.

    ``with_solutions``: the selected chapters' solutions notebooks follow the chapters (they load
    the runs the chapters left in the cache).
    """
    if smoke and preset:
        raise BookError("--smoke and --preset exclude each other (--smoke is the preset of ci/NN.yaml)")
    out = []
    for nb in notebooks(only) + (solutions(only) if with_solutions else []):
        if smoke:
            base, src = smoke_parameters(nb), _parameter_file(nb)
        elif preset:
            base = preset_parameters(nb, preset)
            if preset == CLASSROOM and not (repo_root() / "ci" / preset).is_dir():
                from mmsa import classroom

                src = classroom.values(nb)[1]
            else:
                src = _parameter_file(nb, preset)
        else:
            base, src = {}, ""
        base = check_parameters(nb, base, src) if base else {}
        merged = {**base, **check_parameters(nb, params or {}, "-p")}
        out.append((nb, merged, src))
    return out


# --------------------------------------------------------------------------- running


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _children_cpu() -> float | None:
    """CPU seconds (user + system) of the finished child processes: a notebook's kernel and the
    workers it started, once the kernel has exited (``None`` where ``resource`` does not exist)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _remove_stale(out: Path, nb: Path, figures: bool) -> None:
    if is_solution(nb):  # a solutions notebook writes no metrics or figures of its own
        return
    stale = out / "metrics" / f"{nb.name[:2]}.json"
    stale.unlink(missing_ok=True)
    if figures:
        for f in (out / "figures").glob(f"{nb.name[:2]}_*"):
            f.unlink()


def _publish(nb: Path, executed: Path, staged_figures: Path) -> None:
    """--inplace: the executed notebook (cleaned) and the figures it saved, together."""
    root = repo_root()
    shutil.copyfile(executed, nb)
    clean([nb], check=False, quiet=True)
    if is_solution(nb):
        print(f"      wrote {display_path(nb)}", flush=True)
        return
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    new = {f.name for f in staged_figures.glob(f"{nb.name[:2]}_*")}
    for name in sorted(new):
        shutil.copyfile(staged_figures / name, fig_dir / name)
    gone = sorted(f.name for f in fig_dir.glob(f"{nb.name[:2]}_*") if f.name not in new)
    for name in gone:
        (fig_dir / name).unlink()
    print(f"      wrote {display_path(nb)} and {len(new)} figure(s) to figures/"
          + (f"; removed stale {', '.join(gone)}" if gone else ""), flush=True)


def figure_counts(nb_path: str | os.PathLike) -> tuple[int, int]:
    """(image outputs, ``save_figure(`` calls) of a notebook file: an executed chapter shows at
    least one image for every figure it saves (a call in a loop saves more than one)."""
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    saves = sum("".join(c.get("source", "")).count("save_figure(") for c in code)
    return images, saves


def _target(folder: Path, nb: Path) -> Path:
    """Where the executed copy of ``nb`` goes: ``folder/NAME``, ``folder/solutions/NAME`` for a solution."""
    target = folder / SOLUTIONS / nb.name if is_solution(nb) else folder / nb.name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def run(only=None, smoke=False, inplace=False, params: dict | None = None, preset: str | None = None,
        kernel: str = "python3", with_solutions: bool = False) -> int:
    """Execute notebooks with papermill; returns 0, or 1 if a notebook failed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = repo_root()
    if inplace and (smoke or preset or params):
        raise BookError("--inplace commits the default run; with --smoke, --preset or -p the committed outputs "
                        "would disagree with the notebook's parameters cell (run without --inplace: outputs go to build/)")
    jobs = plan(only, smoke, preset, params, with_solutions=with_solutions)
    check_kernel(kernel)
    mode = "smoke" if smoke else preset
    out = root / "build" / mode if mode else root / "build"
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    old_env = {k: os.environ.get(k) for k in (ENV_OUT, "PYTHONPATH", "MPLBACKEND", "MMSA_PRESET")}
    os.environ.pop("MMSA_PRESET", None)  # the parameters are injected; a kernel must not apply a preset again
    os.environ[ENV_OUT] = str(out)
    os.environ["MPLBACKEND"] = INLINE_BACKEND   # the kernel inherits it: figures on the page
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), old_env["PYTHONPATH"]]))
    report, total, n = [], 0.0, len(jobs)
    print(f"[mmsa.book] running {n} notebook(s){' in mode ' + mode if mode else ''}; outputs under "
          f"{display_path(out)}/" + ("; --inplace: notebooks/ and figures/ after each success" if inplace else ""),
          flush=True)
    try:
        for k, (nb, p, src) in enumerate(jobs, 1):
            shown = ", ".join(f"{a}={b!r}" for a, b in p.items()) or "defaults"
            print(f"[{k}/{n}] {nb.stem}: {shown}" + (f" (from {src})" if src and p else ""), flush=True)
            _remove_stale(out, nb, figures=inplace)
            target = _target(out / "notebooks", nb)
            t0, cpu0 = time.perf_counter(), _children_cpu()
            status, error = "ok", None
            try:
                papermill.execute_notebook(str(nb), str(target), parameters=p, kernel_name=kernel,
                                           cwd=str(root), progress_bar=False, log_output=False)
            except PapermillExecutionError as err:
                status, error = "failed", f"cell [{err.exec_count}] raised {err.ename}: {_first_line(err.evalue)}"
            dt = time.perf_counter() - t0
            cpu = None if cpu0 is None else round(_children_cpu() - cpu0, 1)  # the kernel and its workers
            total += dt
            if status == "ok":
                print(f"[{k}/{n}] {nb.stem} done in {_fmt_s(dt)}" + (f", CPU {_fmt_s(cpu)}" if cpu is not None else "")
                      + f" (total {_fmt_s(total)})", flush=True)
                if inplace:
                    _publish(nb, target, out / "figures")
            else:
                print(f"[{k}/{n}] {nb.stem} FAILED after {_fmt_s(dt)} (total {_fmt_s(total)}): {error}\n"
                      f"      the executed copy with the traceback: {display_path(target)}"
                      + ("; notebooks/ and figures/ left unchanged" if inplace else ""), flush=True)
            report.append({"notebook": nb.name, "seconds": round(dt, 1), "cpu_seconds": cpu, "status": status, "error": error,
                           "parameters": p, "mode": mode or "default"})
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        (out / "book_run.json").write_text(json.dumps(report, indent=1))
    failed = [r["notebook"] for r in report if r["status"] != "ok"]
    print(f"[mmsa.book] {n - len(failed)}/{n} notebook(s) ran in {_fmt_s(total)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def prepare_ci(nb: Path, params: dict, target: Path) -> Path:
    """The CI copy of ``nb``: parameters injected by papermill (``prepare_only``), outputs stripped.

    nbval then executes it once.  ``# NBVAL_CHECK_OUTPUT`` cells compare against the committed
    outputs only when CI runs the notebook with its default parameters; otherwise the marker is
    dropped in the copy (the committed outputs come from the default run, not from CI's).
    """
    import nbformat
    import papermill

    papermill.execute_notebook(str(nb), str(target), parameters=params, prepare_only=True,
                               progress_bar=False, log_output=False)
    copy_nb = nbformat.read(target, as_version=4)
    for cell in copy_nb.cells:
        if cell.cell_type != "code":
            continue
        checked = any(line.strip() == "# NBVAL_CHECK_OUTPUT" for line in cell.source.splitlines())
        if checked and params:
            cell.source = "\n".join(line for line in cell.source.splitlines() if line.strip() != "# NBVAL_CHECK_OUTPUT")
        if not (checked and not params):
            cell.outputs, cell.execution_count = [], None
    nbformat.write(copy_nb, target)
    return target


def test(only=None, skip_unit=False) -> int:
    """Unit tests, ``clean --check``, each notebook once in CI mode under nbval, then the claims."""
    root = repo_root()
    py = sys.executable
    nbs = notebooks(only)
    jobs = plan(only, smoke=True, with_solutions=True)
    out = root / "build" / "smoke"
    env = dict(os.environ)
    env[ENV_OUT] = str(out)
    env.pop("MMSA_PRESET", None)  # CI mode injects its parameters
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    if only:
        env[ENV_ONLY] = " ".join(nb.name[:2] for nb in nbs)
    else:
        env.pop(ENV_ONLY, None)
    timings, t_all = [], time.perf_counter()

    def step(name, fn):
        print(f"\n===== {name}", flush=True)
        t0 = time.perf_counter()
        rc = fn()
        dt = time.perf_counter() - t0
        timings.append((name, dt, rc))
        print(f"===== {name}: {'ok' if rc == 0 else f'exit {rc}'} after {_fmt_s(dt)}", flush=True)
        return rc

    def call(cmd):
        print("$ " + " ".join(str(c) for c in cmd), flush=True)
        return subprocess.call(cmd, cwd=root, env=env)

    def notebooks_ci():
        (out / "notebooks").mkdir(parents=True, exist_ok=True)
        failed, total = [], 0.0
        for k, (nb, p, src) in enumerate(jobs, 1):
            _remove_stale(out, nb, figures=False)
            target = prepare_ci(nb, p, _target(out / "notebooks", nb))
            shown = ", ".join(f"{a}={b!r}" for a, b in p.items()) or "defaults"
            print(f"[{k}/{len(jobs)}] {nb.stem} (CI mode: {shown})", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call([py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
                                  "-p", "no:cacheprovider", str(target)], cwd=root, env=env)
            dt = time.perf_counter() - t0
            total += dt
            print(f"[{k}/{len(jobs)}] {nb.stem} {'passed' if rc == 0 else 'FAILED'} in {_fmt_s(dt)} "
                  f"(total {_fmt_s(total)})", flush=True)
            if rc != 0:
                failed.append(nb.stem)
        return 1 if failed else 0

    steps = []
    if not skip_unit:
        steps.append(("unit tests", lambda: call([py, "-m", "pytest", "tests", "-q", "--durations=12"])))
    # every notebook of notebooks/ (index and solutions included), or the selected ones and their solutions
    steps.append(("notebook hygiene (clean --check)",
                  lambda: clean(nbs + solutions(only) if only else None, check=True)))
    steps.append(("notebooks and their solutions in CI mode (papermill parameters, executed once under nbval-lax)",
                  notebooks_ci))
    steps.append(("claims on build/smoke/metrics", lambda: call([py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                                 str(root / "ci" / "test_claims.py")])))
    rc = 0
    for name, fn in steps:
        rc = step(name, fn)
        if rc != 0:
            break
    print("\n[mmsa.book] test summary: " + "; ".join(f"{n} {_fmt_s(dt)}{'' if r == 0 else ' FAILED'}"
                                                    for n, dt, r in timings)
          + f"; total {_fmt_s(time.perf_counter() - t_all)}", flush=True)
    return rc


# --------------------------------------------------------------------------- clean


_VOLATILE_CELL_KEYS = ("papermill", "execution", "ExecuteTime")
_DROP_CELL_TAGS = ("injected-parameters", "papermill-error-cell-tag")
_TEXT_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "application/javascript")
_START = r"(?<![\w.~<>-])"  # a path starts after a space, quote, bracket ... not inside a word
_SEG = r"/[^\s/\"'<>:()\[\]{},;|]+"
_PATH_RULES = [
    (re.compile(_START + rf"(?:{_SEG})*?/(?:site|dist)-packages/"), "<site-packages>/"),
    (re.compile(_START + rf"(?:{_SEG})*?/ipykernel_\d+/\d+\.py"), "<cell>"),
    (re.compile(_START + r"(?:/private)?(?:/tmp|/var/folders/[^\s/]+/[^\s/]+/T)/tmp[\w-]+"), "<tmp>"),
]
_TOP = {"notebooks", "build", "figures", "data", "mmsa", "ci", "tests", "docs", "benchmarks"}
_ABS_PATH = re.compile(_START + rf"(?:{_SEG})+/?")


def _repo_relative(match: re.Match) -> str:
    """``/any/checkout/build/metrics/00.json`` -> ``<repo>/build/metrics/00.json``.

    The checkout is the longest prefix followed by a top-level folder of the repository, not
    itself inside one (``mmsa/data``, ``build/smoke/figures`` stay whole).
    """
    path = match.group(0)
    comps = path.strip("/").split("/")
    for j in range(len(comps) - 1, 0, -1):
        if comps[j] in _TOP and comps[j - 1] not in _TOP and "build" not in comps[:j] and (
                j < len(comps) - 1 or path.endswith("/")):
            return "<repo>/" + "/".join(comps[j:]) + ("/" if path.endswith("/") else "")
    return path
_MACHINE_PATH = re.compile(_START + r"/(?:work|home|Users|root|tmp|private|var|opt|usr|mnt|scratch|srv|nfs|"
                           r"gpfs|lustre|content|kaggle)/[^\s\"'<>]*")


def scrub_paths(text: str) -> tuple[str, list[str]]:
    """Absolute machine paths -> ``<repo>/…``, ``<site-packages>/…``, ``<tmp>``, ``<cell>``, ``~``.

    Returns the new text and the absolute paths that no rule could rewrite.
    """
    root = str(repo_root())
    if len(root) > 1:
        text = text.replace(root + "/", "<repo>/")
        text = re.sub(re.escape(root) + r"(?![\w/.-])", "<repo>", text)
    for pattern, repl in _PATH_RULES:
        text = pattern.sub(repl, text)
    text = _ABS_PATH.sub(_repo_relative, text)
    home = str(Path.home())
    if len(home) > 1:
        text = re.sub(re.escape(home) + r"(?=[/\s\"']|$)", "~", text)
    return text, _MACHINE_PATH.findall(text)


def _scrub(value, changed: list, left: list):
    if isinstance(value, list):
        return [_scrub(v, changed, left) for v in value]
    if isinstance(value, str):
        new, rest = scrub_paths(value)
        if new != value:
            changed.append(True)
        left.extend(rest)
        return new
    return value


def normalise_ids(raw: dict, name: str = "") -> int:
    """Give every cell of a notebook's JSON a valid, unique id, deterministically; returns how many
    were missing, invalid or duplicated (done on the JSON: nbformat would repair them at random)."""
    seen, fixed = set(), 0
    for i, cell in enumerate(raw.get("cells", [])):
        cid = cell.get("id")
        if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid) or cid in seen:
            source = "".join(cell.get("source", ""))
            digest = hashlib.sha1(f"{name}:{i}:{source}".encode()).hexdigest()
            k = 8
            while digest[:k] in seen:
                k += 1
            cell["id"] = digest[:k]
            fixed += 1
        seen.add(cell["id"])
    if raw.get("nbformat") == 4 and raw.get("nbformat_minor", 0) < 5:
        raw["nbformat_minor"] = 5
    return fixed


def clean_notebook(nb, name: str = "") -> tuple[list[str], list[str]]:
    """Clean ``nb`` (an nbformat node) in place; returns (what was changed, unfixable problems)."""
    found, problems = [], []
    injected = [c for c in nb.cells if set(c.get("metadata", {}).get("tags", [])) & set(_DROP_CELL_TAGS)]
    for c in injected:
        tags = c.metadata.get("tags", [])
        what = "injected-parameters" if "injected-parameters" in tags else "papermill error-marker"
        found.append(f"{what} cell removed: {' '.join(c.source.split())[:80]!r}")
    nb.cells = [c for c in nb.cells if not any(c is x for x in injected)]
    if "papermill" in nb.metadata:
        found.append("papermill run metadata")
        del nb.metadata["papermill"]
    volatile = 0
    path_cells = []
    for i, cell in enumerate(nb.cells):
        meta = cell.setdefault("metadata", {})
        for key in _VOLATILE_CELL_KEYS:
            if key in meta:
                del meta[key]
                volatile += 1
        if "tags" in meta and not meta["tags"]:
            del meta["tags"]
        if cell.cell_type != "code":
            continue
        changed, left = [], []
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _scrub(out["text"], changed, left)
            if "traceback" in out:
                out["traceback"] = _scrub(out["traceback"], changed, left)
            if "evalue" in out:
                out["evalue"] = _scrub(out["evalue"], changed, left)
            for mime in _TEXT_MIME:
                if mime in out.get("data", {}):
                    out["data"][mime] = _scrub(out["data"][mime], changed, left)
        if changed:
            path_cells.append(i)
        for p in dict.fromkeys(left):
            problems.append(f"cell {i}: absolute path {p!r} in an output (print it relative to the repository)")
    if volatile:
        found.append(f"execution metadata of {volatile} cell(s)")
    if path_cells:
        found.append(f"absolute paths in the outputs of cell(s) {', '.join(map(str, path_cells))}")
    return found, problems


def _notebook_files(paths) -> list[Path]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
        elif p.suffix == ".ipynb" and p.exists():
            files.append(p)
        else:
            raise BookError(f"{p}: not a notebook (.ipynb) or a folder of notebooks")
    return files


def clean(paths=None, check: bool = False, quiet: bool = False) -> int:
    """Strip volatile metadata; ``check``: only report (exit 1 if any notebook needs cleaning)."""
    import nbformat

    files = _notebook_files(paths or [repo_root() / "notebooks"])
    offending = 0
    for f in files:
        text = f.read_text()
        raw = json.loads(text)
        bad_ids = normalise_ids(raw, f.name)
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        found, problems = clean_notebook(nb, f.name)
        if bad_ids:
            found.append(f"{bad_ids} missing, invalid or duplicate cell id(s)")
        new_text = nbformat.writes(nb) + "\n"
        changed = json.loads(new_text) != json.loads(text)
        if check:
            if changed or problems:
                offending += 1
                print(f"{display_path(f)}: needs `python -m mmsa.book clean`: "
                      + "; ".join(found + problems or ["metadata not normalised"]))
            continue
        if changed:
            f.write_text(new_text)
        if problems:
            offending += 1
        if (changed and not quiet) or problems:
            print(f"{display_path(f)}: " + ("cleaned: " + "; ".join(found or ["metadata normalised"]) if changed else "")
                  + ("; NOT fixed: " + "; ".join(problems) if problems else ""))
    if check:
        print(f"[mmsa.book] clean --check: {len(files) - offending}/{len(files)} notebook(s) clean"
              + (f"; {offending} need `python -m mmsa.book clean`" if offending else ""))
    return 1 if offending else 0


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmsa.book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers, e.g. 00 03")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="CI mode: parameters from ci/NN.yaml, outputs in build/smoke/")
    mode.add_argument("--preset", metavar="NAME", help="parameters from ci/NAME/NN.yaml, outputs in build/NAME/; "
                      "classroom: the CI parameters ci/NN.yaml (MMSA_PRESET=classroom in JupyterLab)")
    r.add_argument("--inplace", action="store_true",
                   help="after each successful notebook, write it (cleaned) into notebooks/ and its figures into figures/")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="override a parameter (value parsed as YAML); applied over --smoke/--preset")
    r.add_argument("--solutions", action="store_true",
                   help="after the chapters, run their solutions (notebooks/solutions/NN_solutions.ipynb)")
    r.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    t = sub.add_parser("test", help="unit tests + clean --check + notebooks and solutions in CI mode under nbval + claims")
    t.add_argument("--only", nargs="+", metavar="NN", help="limit notebooks (and their solutions), nbval and claims to these")
    t.add_argument("--skip-unit", action="store_true", help="skip the unit tests")
    w = sub.add_parser("site", help="the book as a static website (Jupyter Book, offline): build/site/_build/html/")
    w.add_argument("--only", nargs="+", metavar="NN", help="only these chapters (and their solutions)")
    w.add_argument("--from", dest="executed", metavar="DIR",
                   help="executed notebooks to publish (default build/notebooks/; the committed ones otherwise)")
    c = sub.add_parser("clean", help="strip volatile metadata, injected parameters and machine paths from notebooks")
    c.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/)")
    c.add_argument("--check", action="store_true", help="only list the notebooks that need cleaning (exit 1 if any)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            params = {}
            for name, value in args.param:
                params[name] = parse_value(name, value)
            return run(args.only, args.smoke, args.inplace, params, preset=args.preset, kernel=args.kernel,
                       with_solutions=args.solutions)
        if args.cmd == "clean":
            return clean(args.paths or None, check=args.check)
        if args.cmd == "site":
            from mmsa import book_site

            from mmsa import book as package  # `python -m mmsa.book` runs this file as __main__

            try:
                book_site.build(args.only, args.executed)
            except package.BookError as err:
                raise BookError(str(err)) from None
            return 0
        return test(args.only, args.skip_unit)
    except BookError as err:
        print(f"python -m mmsa.book {args.cmd}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
