"""Parameter presets inside a notebook: the classroom mode, without papermill.

A chapter's setup cell is one line, ``root = mmsa.book.setup(globals(), "NN")``: it runs after the
``parameters`` cell, so :func:`apply` can replace the values of that cell in the notebook's own
namespace before anything uses them.  The preset is chosen by the environment variable
``MMSA_PRESET`` (:data:`ENV_PRESET`), set before JupyterLab starts::

    MMSA_PRESET=classroom jupyter lab        # every chapter in 15 s to 2 min on 2 CPU cores

or, for one kernel only, by ``%env MMSA_PRESET=classroom`` in a cell above the setup cell (then
restart and run all).  ``full`` (or nothing) keeps the notebook's parameters.

``classroom`` takes the chapter's CI parameters, ``ci/NN.yaml`` (``ci/solutions/NN.yaml`` for a
solutions notebook): they were chosen so that every chapter runs in minutes and every code path is
exercised.  Where a chapter needs smaller values in class than in CI, the ``values`` section of
``ci/classroom.yaml`` overrides them (``mmsa.book.params.classroom_values``).  Any other name is a preset folder ``ci/<NAME>/`` of ``python -m mmsa.book run --preset``
(``gpu``).  A value the reader has changed by hand in the parameters cell, or that papermill
injected, is kept: only the values still equal to the cell's defaults are replaced.  Setup prints
each change with what it means at that size, from ``ci/classroom.yaml``.

Under a preset, figures and key numbers go to ``build/<preset>/figures`` and
``build/<preset>/metrics`` (as with ``python -m mmsa.book run --preset <preset>``), so the small
runs never mix with the numbers of the full chapters.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_PRESET = "MMSA_PRESET"
CLASSROOM = "classroom"
FULL = ("", "full", "default", "none")


def current() -> str | None:
    """The preset ``$MMSA_PRESET`` asks for, or ``None`` for the notebook's own parameters."""
    name = os.environ.get(ENV_PRESET, "").strip()
    return None if name.lower() in FULL else name


def notebook_path(notebook: str) -> Path:
    """``"07"`` -> ``notebooks/07_*.ipynb``; ``"solutions/07"`` -> ``notebooks/solutions/07_solutions.ipynb``."""
    from mmsa.book import paths
    from mmsa.book import params

    key = str(notebook).strip().removesuffix(".ipynb")
    solutions = key.startswith(f"{params.SOLUTIONS}/")
    key = key.split("/")[-1][:2]
    found = params.solutions([key]) if solutions else params.notebooks([key])
    if not found:
        raise paths.BookError(f"no notebook {notebook!r}: expected a chapter number such as '07' or 'solutions/07'")
    return found[0]


def parameters(nb: Path, preset: str) -> tuple[dict, str]:
    """The preset's values for notebook ``nb`` (checked against its parameters cell) and their file."""
    from mmsa.book import params

    if preset == CLASSROOM:
        chosen, source = params.classroom_values(nb)
    else:
        chosen, source = params.preset_parameters(nb, preset), params._parameter_file(nb, preset)
    return (params.check_parameters(nb, chosen, source) if chosen else {}), source


def notes(nb: Path) -> dict[str, str]:
    """``{parameter: what its classroom value changes}`` for notebook ``nb`` (``ci/classroom.yaml``)."""
    from mmsa.book import params

    data = params.classroom_notes()
    return {**(data.get("all") or {}), **(data.get(params.notebook_key(nb)) or {})}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def apply(namespace: dict, notebook: str | None, preset: str | None = None) -> dict:
    """Replace the parameters in ``namespace`` (a notebook's ``globals()``) by the preset's values.

    Returns ``{name: (old, new)}`` of what changed; prints it, with the notes of ``ci/classroom.yaml``.
    Values that differ from the parameters cell's defaults (edited by hand, injected by papermill)
    are kept.
    """
    from mmsa.book import paths
    from mmsa.book import params

    preset = preset if preset is not None else current()
    if not preset:
        return {}
    if not notebook:
        print(f"[mmsa.book] {ENV_PRESET}={preset} is ignored here: call setup(globals(), \"NN\") with the "
              "chapter number to apply a preset", flush=True)
        return {}
    nb = notebook_path(notebook)
    values, source = parameters(nb, preset)
    declared = params.declared_parameters(nb)
    changed, kept = {}, []
    for name, new in values.items():
        old = namespace.get(name, declared.get(name))
        default = declared.get(name)
        if default is not params._UNKNOWN and old != default:
            kept.append(name)
            continue
        if old != new:
            namespace[name] = new
            changed[name] = (old, new)
    if paths.out_dir() is None:  # a notebook opened by hand: the preset's runs get their own folder
        os.environ[paths.ENV_OUT] = str(paths.repo_root() / "build" / preset)
    told = notes(nb)
    lines = [f"[mmsa.book] {ENV_PRESET}={preset}: parameters from {source}"
             + ("" if changed else " (nothing to change)")]
    for name, (old, new) in changed.items():
        lines.append(f"  {name}: {_short(old)} -> {_short(new)}" + (f"  ({told[name]})" if name in told else ""))
    if kept:
        lines.append(f"  kept as set in this notebook (not the defaults): {', '.join(kept)}")
    if changed and told.get("_"):
        lines.append(f"  {told['_']}")
    print("\n".join(lines), flush=True)
    return changed
