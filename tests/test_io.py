"""Saving and loading parameters: bit-exact round trip, every bad file refused by name, no pickle."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import refvae
from refvae.io import CONFIG_FILE, FORMAT_VERSION, PARAMS_FILE, load_params, save_params


def example_params(rng):
    w = rng.standard_normal((5, 3))
    w[0, 0] = -0.0
    w[0, 1] = 5e-324            # smallest subnormal
    w[0, 2] = 1.7976931348623157e308
    return {"encoder.0.W": w, "encoder.0.b": rng.standard_normal(3), "prior.logits": np.array(0.25),
            # names that would collide with np.savez's own keyword arguments
            "file": np.arange(4.0), "allow_pickle": np.ones((2, 0))}


def shapes_of(params):
    return {k: v.shape for k, v in params.items()}


@pytest.fixture
def saved(tmp_path, rng):
    params = example_params(rng)
    save_params(tmp_path, params, {"model": {"latent_dim": 2, "hidden": [7, 5]}, "seed": 3})
    return tmp_path, params


# ---------------------------------------------------------------------- round trip
def test_round_trip_bit_exact(saved):
    directory, params = saved
    loaded, config = load_params(directory, shapes_of(params))
    assert list(loaded) == list(params)
    for k, v in params.items():
        assert loaded[k].dtype == np.float64 and loaded[k].flags.c_contiguous and loaded[k].flags.writeable
        assert loaded[k].shape == v.shape
        assert loaded[k].tobytes() == np.ascontiguousarray(v).tobytes(), k  # bit-exact, -0.0 included
    assert config == {"model": {"latent_dim": 2, "hidden": [7, 5]}, "seed": 3,
                      "format_version": FORMAT_VERSION, "refvae_version": refvae.__version__}
    assert load_params(directory)[0].keys() == params.keys()  # without expected shapes too


def test_files_are_plain_npz_and_sorted_json(saved):
    directory, params = saved
    with np.load(directory / PARAMS_FILE, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(params)
        assert all(npz[k].dtype == np.float64 for k in npz.files)
    text = (directory / CONFIG_FILE).read_text()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert text.index('"format_version"') < text.index('"model"') < text.index('"refvae_version"')


def test_resave_of_loaded_config_and_no_leftover_files(saved):
    directory, params = saved
    loaded, config = load_params(directory)
    save_params(directory, loaded, config)  # the reserved keys are simply rewritten
    assert sorted(os.listdir(directory)) == [CONFIG_FILE, PARAMS_FILE]


def test_failed_write_leaves_old_file_intact_and_no_temporary(saved, monkeypatch):
    directory, params = saved
    before = (directory / PARAMS_FILE).read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        save_params(directory, {"x": np.ones(3)}, {})
    assert (directory / PARAMS_FILE).read_bytes() == before
    assert sorted(os.listdir(directory)) == [CONFIG_FILE, PARAMS_FILE]


# ---------------------------------------------------------------------- bad parameter files
def overwrite_npz(directory, **arrays):
    """What ``np.savez(path, **arrays)`` writes (it cannot take a key named 'file')."""
    with zipfile.ZipFile(directory / PARAMS_FILE, "w") as zf:
        for k, v in arrays.items():
            with zf.open(k + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(v), allow_pickle=True)


@pytest.mark.parametrize("case, key, message", [
    ("missing", "encoder.0.b", "missing key"),
    ("extra", "decoder.9.W", "extra key"),
    ("shape", "encoder.0.W", r"shape \(3, 5\); expected \(5, 3\)"),
    ("int", "encoder.0.W", "dtype int64"),
    ("bool", "encoder.0.W", "dtype bool"),
    ("complex", "encoder.0.W", "dtype complex128"),
    ("longdouble", "encoder.0.W", "dtype float128"),
    ("nan", "encoder.0.b", "contains nan"),
    ("inf", "encoder.0.b", "contains -inf"),
])
def test_bad_arrays_name_file_and_key(saved, case, key, message):
    directory, params = saved
    arrays = dict(params)
    if case == "missing":
        del arrays[key]
    elif case == "extra":
        arrays[key] = np.ones(2)
    elif case == "shape":
        arrays[key] = arrays[key].T.copy()
    elif case == "int":
        arrays[key] = np.ones((5, 3), dtype=np.int64)
    elif case == "bool":
        arrays[key] = np.ones((5, 3), dtype=bool)
    elif case == "complex":
        arrays[key] = np.ones((5, 3), dtype=np.complex128)
    elif case == "longdouble":
        if np.dtype(np.longdouble).itemsize <= 8:
            pytest.skip("long double is float64 on this platform")
        arrays[key] = np.ones((5, 3), dtype=np.longdouble)
    elif case == "nan":
        arrays[key] = np.array([0.0, np.nan, 1.0])
    elif case == "inf":
        arrays[key] = np.array([0.0, 1.0, -np.inf])
    overwrite_npz(directory, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_params(directory, shapes_of(params))
    assert str(directory / PARAMS_FILE) in str(info.value)
    assert repr(key) in str(info.value) or key in str(info.value)


def test_float32_file_is_upcast_exactly(saved):
    directory, params = saved
    arrays = {k: v.astype(np.float32) for k, v in params.items() if k != "encoder.0.W"}
    arrays["encoder.0.W"] = np.full((5, 3), 0.1, dtype=np.float32)
    overwrite_npz(directory, **arrays)
    loaded, _ = load_params(directory, shapes_of(params))
    assert loaded["encoder.0.W"].dtype == np.float64
    assert loaded["encoder.0.W"][0, 0] == float(np.float32(0.1))


_UNPICKLED = []


def _side_effect():
    _UNPICKLED.append(True)
    return "executed"


class Evil:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_object_array_is_refused_and_never_unpickled(saved):
    directory, params = saved
    arrays = {k: v for k, v in params.items() if k not in ("file", "allow_pickle")}
    arrays["encoder.0.b"] = np.array([Evil(), 1.0, 2.0], dtype=object)
    np.savez(directory / PARAMS_FILE, **arrays)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match=r"'encoder.0.b' contains object arrays \(refused: no pickle"):
        load_params(directory)
    assert _UNPICKLED == []


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", pickle.dumps({"a": np.ones(2)}),
                                     b"PK\x03\x04 truncated"])
def test_garbage_params_file(saved, content):
    directory, _ = saved
    (directory / PARAMS_FILE).write_bytes(content)
    with pytest.raises(ValueError, match="params.npz"):
        load_params(directory)


def test_single_npy_instead_of_npz(saved):
    directory, _ = saved
    with open(directory / PARAMS_FILE, "wb") as fh:
        np.save(fh, np.ones(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_params(directory)


def test_missing_params_file(tmp_path):
    with pytest.raises(ValueError, match="params.npz: parameter file is missing"):
        load_params(tmp_path)


# ---------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("text, message", [
    (None, "config file is missing"),
    ("{not json", "malformed config"),
    ('{"format_version": 1, "refvae_version": "0.1.0", "x": NaN}', "malformed config.*NaN"),
    ('{"format_version": 1, "format_version": 1, "refvae_version": "0.1.0"}',
     "duplicate key 'format_version'"),
    ("[1, 2]", "must be a JSON object"),
    ('{"refvae_version": "0.1.0"}', "'format_version' is missing"),
    ('{"format_version": "1", "refvae_version": "0.1.0"}', "'format_version' must be an integer"),
    ('{"format_version": 99, "refvae_version": "0.1.0"}', "'format_version' is 99"),
    ('{"format_version": 1}', "'refvae_version' is missing"),
])
def test_bad_config_names_file_and_key(saved, text, message):
    directory, _ = saved
    path = directory / CONFIG_FILE
    if text is None:
        path.unlink()
    else:
        path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_params(directory)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------- refusing to save
def test_save_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"params\['a'\] contains nan"):
        save_params(tmp_path, {"a": np.array([1.0, np.nan])}, {})
    with pytest.raises(TypeError, match=r"params\['a'\] must be an array of real numbers"):
        save_params(tmp_path, {"a": np.array([object()])}, {})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_params(tmp_path, {"a": np.ones(2)}, {"x": float("inf")})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_params(tmp_path, {"a": np.ones(2)}, {"x": object()})
    with pytest.raises(ValueError, match="not a valid name"):
        save_params(tmp_path, {"a/b": np.ones(2)}, {})
    with pytest.raises(TypeError, match="config must be a dict"):
        save_params(tmp_path, {"a": np.ones(2)}, [1])
    assert os.listdir(tmp_path) == []  # nothing written on refusal
