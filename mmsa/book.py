"""Run the textbook: every notebook, in order, with papermill (SPEC §7).

    python -m mmsa.book run                 # the main job: default parameters, all notebooks
    python -m mmsa.book run --inplace       # ... and write the outputs back into notebooks/
    python -m mmsa.book run --smoke         # CI mode: small parameters from ci/NN.yaml
    python -m mmsa.book run --smoke --only 00 03
    python -m mmsa.book test                # the whole test suite (what .ci/run calls)

Executed copies go to ``build/notebooks/`` (smoke: ``build/smoke/notebooks/``), figures to
``figures/`` (smoke: ``build/smoke/figures/`` so CI never overwrites the committed ones),
key numbers to ``build/metrics/NN.json``.  Parameter names are checked against
``papermill.inspect_notebook``: papermill itself would silently accept a typo.

Inside a notebook, the first code cell after ``parameters`` calls :func:`setup`, and
figures/numbers are saved with :func:`save_figure` / :func:`save_metrics`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENV_OUT = "MMSA_BOOK_OUT"  # set by smoke runs: where figures go instead of figures/


def repo_root() -> Path:
    """The repository root (holds notebooks/ and mmsa/); falls back to the current directory."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "notebooks").is_dir() and (p / "mmsa").is_dir():
            return p
    return Path.cwd()


def figures_dir() -> Path:
    out = os.environ.get(ENV_OUT)
    path = Path(out) / "figures" if out else repo_root() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def metrics_dir() -> Path:
    out = os.environ.get(ENV_OUT)
    path = Path(out) / "metrics" if out else repo_root() / "build" / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(threads: int | None = None, style: bool = True) -> Path:
    """Notebook preamble: cd to the repo root (so data/ and figures/ resolve), plot style."""
    root = repo_root()
    os.chdir(root)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if style:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "figure.figsize": (7, 3.6),
                                    "axes.spines.top": False, "axes.spines.right": False})
    return root


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (stable names: ``NN_what``)."""
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
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "item") and callable(x.item):  # 0-d torch tensor
        return x.item()
    return x


def save_metrics(notebook: str | int, values: dict) -> Path:
    """Merge ``values`` into ``build/metrics/NN.json`` (read by the claims checks)."""
    nn = f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)
    path = metrics_dir() / f"{nn}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(_jsonable(values))
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path


def load_metrics(notebook: str | int) -> dict:
    nn = f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)
    path = metrics_dir() / f"{nn}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m mmsa.book run --only {nn}` first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- running


def notebooks(only: list[str] | None = None) -> list[Path]:
    nbs = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {f"{int(o):02d}" if o.isdigit() else o for o in only}
        nbs = [p for p in nbs if p.name[:2] in wanted]
        missing = wanted - {p.name[:2] for p in nbs}
        if missing:
            raise SystemExit(f"no notebook numbered {sorted(missing)} in notebooks/")
    return nbs


def smoke_parameters(nb: Path) -> dict:
    """Parameters for CI mode: ``ci/NN.yaml`` (or ``{}`` when the defaults are already small)."""
    import yaml

    path = repo_root() / "ci" / f"{nb.name[:2]}.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def check_parameters(nb: Path, params: dict) -> None:
    """Unknown parameter names are an error (papermill would only warn)."""
    import papermill

    declared = papermill.inspect_notebook(str(nb))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{nb.name}: unknown parameter(s) {unknown}; the notebook's parameters are "
                         f"{sorted(declared)}")


def run(only=None, smoke=False, inplace=False, params: dict | None = None, kernel="python3") -> list[dict]:
    import papermill

    root = repo_root()
    out = root / "build" / "smoke" if smoke else root / "build"
    out_nb = out / "notebooks"
    out_nb.mkdir(parents=True, exist_ok=True)
    if smoke:
        os.environ[ENV_OUT] = str(out)
    else:
        os.environ.pop(ENV_OUT, None)
    report = []
    for nb in notebooks(only):
        p = dict(smoke_parameters(nb) if smoke else {})
        p.update(params or {})
        check_parameters(nb, p)
        target = nb if inplace else out_nb / nb.name
        print(f"[mmsa.book] {nb.name} {'(smoke) ' if smoke else ''}params={p}", flush=True)
        t0 = time.perf_counter()
        papermill.execute_notebook(str(nb), str(target), parameters=p, kernel_name=kernel,
                                   cwd=str(root), progress_bar=False, log_output=False)
        dt = time.perf_counter() - t0
        print(f"[mmsa.book] {nb.name} done in {dt:.1f} s -> {target.relative_to(root)}", flush=True)
        report.append({"notebook": nb.name, "seconds": round(dt, 1), "smoke": smoke})
    (out / "book_run.json").write_text(json.dumps(report, indent=1))
    return report


def test(only=None, skip_unit=False) -> int:
    """Unit tests, then the smoke run, then nbval on the executed copies, then the claims."""
    root = repo_root()
    py = sys.executable
    env = dict(os.environ)
    steps = []
    if not skip_unit:
        steps.append(("unit tests", [py, "-m", "pytest", "tests", "-q", "--durations=12"]))
    steps.append(("notebooks (smoke run)", [py, "-m", "mmsa.book", "run", "--smoke"] + (["--only", *only] if only else [])))
    smoke_nb = root / "build" / "smoke" / "notebooks"
    steps.append(("nbval-lax on executed copies", [py, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                                                   str(smoke_nb)]))
    steps.append(("claims on build/smoke/metrics", [py, "-m", "pytest", "-q", str(root / "ci" / "test_claims.py")]))
    env[ENV_OUT] = str(root / "build" / "smoke")
    for name, cmd in steps:
        print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=root, env=env)
        print(f"===== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            return rc
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmsa.book", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("--smoke", action="store_true", help="CI mode: small parameters from ci/NN.yaml")
    r.add_argument("--only", nargs="+", help="notebook numbers, e.g. 00 03")
    r.add_argument("--inplace", action="store_true", help="write outputs back into notebooks/")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="override a parameter (value parsed as YAML)")
    t = sub.add_parser("test", help="unit tests + smoke run + nbval + claims (what CI runs)")
    t.add_argument("--only", nargs="+")
    t.add_argument("--skip-unit", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        import yaml

        params = {k: yaml.safe_load(v) for k, v in args.param}
        run(args.only, args.smoke, args.inplace, params)
        return 0
    return test(args.only, args.skip_unit)


if __name__ == "__main__":
    sys.exit(main())
