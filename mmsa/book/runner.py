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
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mmsa.book import paths
from mmsa.book.paths import ENV_ONLY, ENV_OUT, BookError, display_path
from mmsa.book.clean import clean
from mmsa.book.params import (SOLUTIONS, _first_line, check_kernel, is_solution, notebooks, parse_value, plan,
                              solutions)

# the matplotlib backend of the kernels `run` starts, whatever MPLBACKEND says in the caller's
# environment (CI exports Agg): an executed notebook carries its figures as image outputs
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"




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
    root = paths.repo_root()
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

    root = paths.repo_root()
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
    root = paths.repo_root()
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
            from mmsa.book import site

            site.build(args.only, args.executed)
            return 0
        return test(args.only, args.skip_unit)
    except BookError as err:
        print(f"python -m mmsa.book {args.cmd}: error: {err}", file=sys.stderr)
        return 2
