"""Which notebooks exist, and their parameters: CI/preset files, checks, the run plan (docs/design.md §7)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from mmsa.book import paths
from mmsa.book.paths import BookError

def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``notebooks/NN_*.ipynb``, optionally only some (``["00", "3"]``)."""
    nbs = sorted((paths.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
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
    folder = paths.repo_root() / "notebooks" / SOLUTIONS
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.name[:2] in numbers)


def is_solution(nb: Path) -> bool:
    return nb.parent.name == SOLUTIONS


def presets() -> list[str]:
    """Parameter presets: folders ``ci/<NAME>/`` holding ``NN.yaml`` files (``ci/solutions/`` is not one)."""
    ci = paths.repo_root() / "ci"
    found = sorted(p.name for p in ci.iterdir() if p.is_dir() and p.name != SOLUTIONS
                   and any(p.glob("[0-9][0-9].yaml"))) if ci.is_dir() else []
    return sorted({*found, CLASSROOM}) if (ci / "00.yaml").exists() else found


CLASSROOM = "classroom"  # the preset of the CI parameters ci/NN.yaml (mmsa.book.classroom; MMSA_PRESET=classroom)


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
    path = paths.repo_root() / _parameter_file(nb)
    return _load_yaml_file(path) if path.exists() else {}


def preset_parameters(nb: Path, preset: str) -> dict:
    """Parameters of ``ci/<preset>/NN.yaml``; ``{}`` (the defaults) when that file does not exist.

    ``classroom`` is the preset of the CI parameters ``ci/NN.yaml``, run under ``build/classroom/``.
    """
    if preset == CLASSROOM and not (paths.repo_root() / "ci" / preset).is_dir():
        return classroom_values(nb)[0]
    folder = paths.repo_root() / "ci" / preset
    if not re.fullmatch(r"[\w-]+", preset) or not folder.is_dir() or preset == SOLUTIONS:
        have = presets()
        raise BookError(f"no preset {preset!r} (no folder ci/{preset}/ with NN.yaml files); available presets: "
                        + (", ".join(have) if have else "none yet") + "; CI parameters are --smoke")
    path = paths.repo_root() / _parameter_file(nb, preset)
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
            if preset == CLASSROOM and not (paths.repo_root() / "ci" / preset).is_dir():
                src = classroom_values(nb)[1]
            else:
                src = _parameter_file(nb, preset)
        else:
            base, src = {}, ""
        base = check_parameters(nb, base, src) if base else {}
        merged = {**base, **check_parameters(nb, params or {}, "-p")}
        out.append((nb, merged, src))
    return out


# --------------------------------------------------------------------------- the classroom preset's values
NOTES_FILE = "ci/classroom.yaml"  # classroom values that differ from CI's, and what each change means


def notebook_key(nb: Path) -> str:
    """``"07"`` for a chapter, ``"solutions/07"`` for its solutions (the keys of ``NOTES_FILE``)."""
    return f"{SOLUTIONS}/{nb.name[:2]}" if is_solution(nb) else nb.name[:2]


def classroom_notes() -> dict:
    """The contents of ``ci/classroom.yaml`` ({} when there is none)."""
    path = paths.repo_root() / NOTES_FILE
    return _load_yaml_file(path) if path.exists() else {}


def classroom_values(nb: Path) -> tuple[dict, str]:
    """The classroom values of notebook ``nb`` and where they come from: its CI values
    (``ci/NN.yaml``), overridden by ``values: {"NN": {...}}`` of ``ci/classroom.yaml`` if any."""
    base, source = smoke_parameters(nb), _parameter_file(nb)
    extra = (classroom_notes().get("values") or {}).get(notebook_key(nb)) or {}
    return {**base, **extra}, source + (f" + {NOTES_FILE}" if extra else "")
