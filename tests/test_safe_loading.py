"""Feature pickles are read with a restricted unpickler: code carried by a file never runs."""
import collections
import os
import pickle

import numpy as np
import pytest

from mmsa.data import FeatureFileError, UnsafePickleError, load_features, safe_load
from mmsa.data.mmsa_pickle import SAFE_GLOBALS

from test_data import mosi_like, write


class RunsCode:
    """What an attacker would put in a 'feature file': unpickling calls os.system(cmd)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class Execs:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins
        return (builtins.exec, (self.code,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_code_in_a_pickle_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data = mosi_like()
    data["train"]["payload"] = RunsCode(f"touch {marker}")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(UnsafePickleError) as err:
        load_features(path, "mosi")
    msg = str(err.value)
    assert str(path) in msg and ("'posix.system'" in msg or "'os.system'" in msg or "'nt.system'" in msg)
    assert not marker.exists()
    # the same file really would have run the command with plain pickle: the test is not vacuous
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_exec_and_other_globals_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil2.pkl"
    path.write_bytes(pickle.dumps({"train": Execs(f"open({str(marker)!r}, 'w').write('x')")}))
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle 'builtins.exec'"):
        safe_load(path)
    assert not marker.exists()
    # an ordinary class that is not a numpy/builtin container is refused too
    path.write_bytes(pickle.dumps({"x": collections.Counter("ab")}))
    with pytest.raises(UnsafePickleError, match="collections.Counter"):
        safe_load(path)
    assert isinstance(UnsafePickleError("x"), (ValueError, pickle.UnpicklingError))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_everything_a_feature_file_holds_loads(tmp_path, protocol):
    obj = {
        "float": np.zeros((2, 3), np.float32), "int": np.arange(4), "str": np.array(["a", "bb"]),
        "object": np.array(["x", 3], dtype=object), "scalars": [np.int64(3), np.float32(2.5), np.str_("s")],
        "builtins": [1, 2.0, True, None, 1 + 2j, b"by", bytearray(b"ba"), {1, 2}, frozenset({3}), ("t",)],
        "ordered": collections.OrderedDict(a=1), "dtype": np.dtype("f4"),
        "structured": np.zeros(2, dtype=[("a", "f4"), ("b", "i8")]),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = safe_load(path)
    assert back.keys() == obj.keys()
    for k in ("float", "int", "str", "object", "structured"):
        assert back[k].dtype == obj[k].dtype and (back[k] == obj[k]).all()
    assert back["scalars"] == obj["scalars"] and back["builtins"] == obj["builtins"]
    assert back["ordered"] == obj["ordered"] and back["dtype"] == obj["dtype"]


def test_numpy_1x_module_names_accepted(tmp_path):
    """A file written by numpy 1.x names numpy.core.multiarray; numpy 2.x calls it numpy._core."""
    raw = pickle.dumps(np.arange(3, dtype=np.float32), protocol=2)
    for new, old in ((b"numpy._core.multiarray", b"numpy.core.multiarray"),):
        raw = raw.replace(new, old)
    assert b"numpy.core.multiarray" in raw
    path = tmp_path / "np1.pkl"
    path.write_bytes(raw)
    assert safe_load(path).tolist() == [0.0, 1.0, 2.0]
    assert ("numpy.core.multiarray", "_reconstruct") in SAFE_GLOBALS


def test_truncated_empty_and_foreign_files_named(tmp_path):
    good = write(tmp_path, mosi_like())
    data = good.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureFileError, match="truncated") as err:
        load_features(cut, "mosi")
    assert str(cut) in str(err.value)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(FeatureFileError, match="it is empty") as err:
        load_features(empty, "mosi")
    assert str(empty) in str(err.value)
    text = tmp_path / "notes.pkl"
    text.write_text("these are not features\n")
    with pytest.raises(FeatureFileError, match="not an MMSA feature pickle") as err:
        load_features(text, "mosi")
    assert str(text) in str(err.value)
