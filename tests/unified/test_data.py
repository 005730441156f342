"""unified.data: sources, encoding, the canonical split and batch order, and one-line DataErrors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unified.data import Dataset, Split, dataset_from_arrays, load_dataset, split_indices
from unified.errors import DataError, SpecError
from unified.spec import Spec


def make_spec(source: str = "sklearn:iris", task: str = "classification", seed: int = 0, **data) -> Spec:
    return Spec.from_dict({"seed": seed, "task": task, "data": {"source": source, **data}})


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def write_csv(path, text: str):
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(123)


# -- import hygiene ------------------------------------------------------------------------------------

def test_import_pulls_no_framework_or_sklearn():
    code = ("import sys, unified.data, unified.metrics; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'lightning', 'pytorch_lightning', "
            "'ignite', 'sklearn', 'pyarrow', 'pandas') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scheme_list_loads_no_numpy():
    """``unified.spec`` takes its scheme list from ``unified.data.sources.SOURCES``: that costs no numpy."""
    code = "import sys, unified.data.sources as s; print(sorted(s.SOURCES), 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['csv', 'imagefolder', 'npy', 'npz', 'parquet', 'python', 'sklearn'] False"


def test_every_spec_scheme_has_a_reader():
    from unified.data import SOURCES
    from unified.spec import DATA_SCHEMES

    assert set(DATA_SCHEMES) == set(SOURCES)
    assert all(callable(reader) for reader in SOURCES.values())


# -- sklearn source, shapes, dtypes --------------------------------------------------------------------

def test_sklearn_digits_shapes_and_dtypes():
    ds = load_dataset(make_spec("sklearn:digits", test_fraction=0.1))
    n = 1797
    assert len(ds.train) + len(ds.val) + len(ds.test) == n
    assert len(ds.test) == round(n * 0.1) and len(ds.val) == round(n * 0.2)
    assert ds.in_features == 64 and ds.out_features == 10 and ds.num_classes == 10
    assert ds.classes == list(range(10)) and all(type(c) is int for c in ds.classes)
    assert ds.feature_names[0] == "pixel_0_0" and all(isinstance(f, str) for f in ds.feature_names)
    for s in (ds.train, ds.val, ds.test):
        assert s.x.dtype == np.float32 and s.x.ndim == 2
        assert s.y.dtype == np.int64 and s.y.ndim == 1
    assert ds.mean is None and ds.std is None
    json.dumps(ds.classes)


def test_sklearn_regression_and_binary():
    reg = load_dataset(make_spec("sklearn:diabetes", task="regression"))
    assert reg.classes is None and reg.num_classes is None
    assert reg.train.y.dtype == np.float32 and reg.out_features == 1
    assert reg.feature_names[:3] == ["age", "sex", "bmi"]
    binary = load_dataset(make_spec("sklearn:breast_cancer", task="binary"))
    assert binary.train.y.dtype == np.float32 and set(np.unique(binary.train.y)) == {0.0, 1.0}
    assert binary.out_features == 1 and binary.num_classes == 2 and binary.classes == [0, 1]


def test_binary_needs_exactly_two_classes():
    with pytest.raises(DataError) as e:
        load_dataset(make_spec("sklearn:iris", task="binary"))
    assert_one_line(e, "data.source", "task binary needs exactly 2 classes, got 3: [0, 1, 2]")


# -- the split -----------------------------------------------------------------------------------------

def test_split_sizes_disjoint_sorted_and_seeded():
    x = np.arange(200, dtype=np.float64).reshape(100, 2)
    y = np.arange(100) % 3
    spec = make_spec(val_fraction=0.2, test_fraction=0.15, seed=7)
    ds = dataset_from_arrays(x, y, spec)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (65, 20, 15)
    rows = {name: (getattr(ds, name).x[:, 0] / 2).astype(int) for name in ("train", "val", "test")}
    assert set(rows["train"]).isdisjoint(rows["val"]) and set(rows["train"]).isdisjoint(rows["test"])
    assert set(rows["val"]).isdisjoint(rows["test"])
    assert sorted(np.concatenate(list(rows.values()))) == list(range(100))
    for r in rows.values():
        assert np.all(np.diff(r) > 0)  # ascending
    # exactly the documented recipe
    perm = np.random.default_rng([7, 0]).permutation(100)
    assert np.array_equal(rows["test"], np.sort(perm[:15]))
    assert np.array_equal(rows["val"], np.sort(perm[15:35]))
    np.testing.assert_array_equal(ds.train.y, y[rows["train"]])
    other = dataset_from_arrays(x, y, make_spec(val_fraction=0.2, test_fraction=0.15, seed=8))
    assert not np.array_equal(other.val.x, ds.val.x)
    same = dataset_from_arrays(x, y, spec)
    np.testing.assert_array_equal(same.val.x, ds.val.x)


def test_zero_fractions_give_none_and_tiny_val_gets_one():
    x, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10) % 2
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.0))
    assert ds.val is None and ds.test is None and len(ds.train) == 10
    assert ds.eval_batches("val") == []
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.01))
    assert len(ds.val) == 1 and len(ds.train) == 9


def test_train_needs_two_samples():
    with pytest.raises(DataError) as e:
        dataset_from_arrays([[1.0], [2.0], [3.0]], [0, 1, 0], make_spec(val_fraction=0.5))
    assert_one_line(e, "data.source", "train split needs at least 2 samples")


def test_explicit_val_and_test_are_used():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    vx, vy = rng.normal(size=(5, 4)), [2, 1, 0, 0, 1]
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.2), val=(vx, vy))
    assert len(ds.train) == 30 and len(ds.val) == 5 and ds.test is None
    np.testing.assert_array_equal(ds.val.y, [2, 1, 0, 0, 1])
    np.testing.assert_allclose(ds.val.x, vx.astype(np.float32))
    # test given, val still split off x with the spec's fraction
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.2, test_fraction=0.3), test=(vx, vy))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 5)


# -- batch order ---------------------------------------------------------------------------------------

def test_epoch_batches_canonical_and_deterministic():
    x, y = np.random.default_rng(0).normal(size=(103, 2)), np.arange(103) % 2
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.0, batch_size=10, seed=3))
    assert ds.steps_per_epoch() == 11
    b0 = ds.epoch_batches(0)
    assert len(b0) == 11 and [len(b) for b in b0] == [10] * 10 + [3]
    assert all(b.dtype == np.int64 for b in b0)
    assert np.array_equal(np.concatenate(b0), np.random.default_rng([3, 2, 0]).permutation(103))
    assert sorted(np.concatenate(b0).tolist()) == list(range(103))
    again = dataset_from_arrays(x, y, make_spec(val_fraction=0.0, batch_size=10, seed=3)).epoch_batches(0)
    assert all(np.array_equal(a, b) for a, b in zip(b0, again))
    assert not np.array_equal(np.concatenate(ds.epoch_batches(1)), np.concatenate(b0))
    other_seed = dataset_from_arrays(x, y, make_spec(val_fraction=0.0, batch_size=10, seed=4))
    assert not np.array_equal(np.concatenate(other_seed.epoch_batches(0)), np.concatenate(b0))


def test_no_shuffle_and_eval_batches():
    x, y = np.zeros((25, 2)), np.arange(25) % 2
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.2, batch_size=8, shuffle=False))
    assert np.array_equal(np.concatenate(ds.epoch_batches(5)), np.arange(20))
    ev = ds.eval_batches("val")
    assert [b.tolist() for b in ev] == [[0, 1, 2, 3, 4]]
    assert ds.eval_batches("test") == []
    with pytest.raises(ValueError):
        ds.eval_batches("nope")


def test_no_global_rng_use():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    ds = load_dataset(make_spec("sklearn:iris", test_fraction=0.1, standardize=True))
    ds.epoch_batches(2)
    assert np.array_equal(np.random.get_state()[1], state)


# -- standardize ---------------------------------------------------------------------------------------

def test_standardize_uses_train_stats_only():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(80, 3))
    x[:, 2] = 4.0  # constant column: std 0 -> 1
    y = np.arange(80) % 2
    spec = make_spec(val_fraction=0.25, test_fraction=0.1, standardize=True)
    ds = dataset_from_arrays(x, y, spec)
    raw = dataset_from_arrays(x, y, make_spec(val_fraction=0.25, test_fraction=0.1))
    train_raw = raw.train.x.astype(np.float64)
    np.testing.assert_allclose(ds.mean, train_raw.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.std[:2], train_raw.std(0)[:2], rtol=1e-6)
    assert ds.std[2] == 1.0 and ds.mean.dtype == np.float32 and ds.std.dtype == np.float32
    np.testing.assert_allclose(ds.train.x.mean(0)[:2], 0.0, atol=1e-6)
    np.testing.assert_allclose(ds.val.x, (raw.val.x - ds.mean) / ds.std, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ds.val.x.mean(0)[:2], 0.0, atol=1e-6)  # val stats were not used
    np.testing.assert_allclose(ds.transform(raw.test.x), ds.test.x, rtol=1e-6, atol=1e-6)
    test_rows = split_indices(80, spec.seed, 0.25, 0.1)["test"]
    np.testing.assert_array_equal(ds.transform(x[test_rows]), ds.test.x)  # same input -> bit-identical


def test_transform_validates_shape():
    ds = load_dataset(make_spec("sklearn:iris"))
    out = ds.transform([[1, 2, 3, 4]])
    assert out.dtype == np.float32 and out.shape == (1, 4)
    with pytest.raises(DataError) as e:
        ds.transform(np.zeros((2, 3)))
    assert_one_line(e, "expected 4 features", "got 3")
    with pytest.raises(DataError) as e:
        ds.transform(np.zeros(4))
    assert_one_line(e, "expected samples shaped [4]", "a batch")


# -- labels --------------------------------------------------------------------------------------------

def test_string_labels_roundtrip_through_decode():
    x = np.arange(12, dtype=float).reshape(6, 2)
    y = ["dog", "cat", "bird", "cat", "dog", "bird"]
    ds = dataset_from_arrays(x, y, make_spec(val_fraction=0.0))
    assert ds.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ds.train.y, [2, 1, 0, 1, 2, 0])
    assert ds.decode(ds.train.y) == y
    np.testing.assert_array_equal(ds.encode_targets(["cat", "bird"]), [1, 0])
    with pytest.raises(DataError) as e:
        ds.encode_targets(["cat", "cow"])
    assert_one_line(e, "'cow'", "bird")
    json.dumps(ds.classes)


def test_integral_float_and_binary_string_labels():
    x = np.zeros((6, 1))
    ds = dataset_from_arrays(x, np.array([3.0, 1.0, 3.0, 7.0, 1.0, 7.0]), make_spec(val_fraction=0.0))
    assert ds.classes == [1, 3, 7] and all(type(c) is int for c in ds.classes)
    assert ds.decode(np.array([2, 0])) == [7, 1]
    b = dataset_from_arrays(x, ["yes", "no", "yes", "no", "no", "yes"], make_spec(task="binary", val_fraction=0.0))
    assert b.classes == ["no", "yes"] and b.train.y.dtype == np.float32
    np.testing.assert_array_equal(b.train.y, [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(b.encode_targets(["no", "yes"]), np.array([0.0, 1.0], np.float32))
    assert b.decode([1, 0]) == ["yes", "no"]


@pytest.mark.parametrize("y, task, expect", [
    ([0.5, 1.0, 0.0, 1.0], "classification", "integer or string labels"),
    ([1, 1, 1, 1], "classification", "at least 2 classes"),
    (["a", "b", "c", "a"], "regression", "numeric targets"),
    ([[0, 1], [1, 0], [0, 1], [1, 1]], "classification", "only allowed for task regression"),
])
def test_bad_targets(y, task, expect):
    with pytest.raises(DataError) as e:
        dataset_from_arrays(np.zeros((4, 2)), y, make_spec(task=task, val_fraction=0.0))
    assert_one_line(e, "data.source", expect)


def test_multi_output_regression():
    rng = np.random.default_rng(0)
    ds = dataset_from_arrays(rng.normal(size=(20, 3)), rng.normal(size=(20, 2)), make_spec(task="regression"))
    assert ds.out_features == 2 and ds.train.y.shape == (16, 2) and ds.train.y.dtype == np.float32
    with pytest.raises(DataError):
        ds.decode([0])


@pytest.mark.parametrize("x, expect", [
    ([[1.0, np.nan], [2.0, 3.0], [np.inf, 1.0], [0.0, 0.0]], "2 NaN/inf values"),
    ([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]], "must be numeric"),
    (np.zeros((3, 2)), "3 rows but y has 4"),
])
def test_bad_features(x, expect):
    with pytest.raises(DataError) as e:
        dataset_from_arrays(x, [0, 1, 0, 1], make_spec(val_fraction=0.0))
    assert_one_line(e, "data.source", expect)


def test_samples_of_any_shape_and_data_shape():
    """N-D samples pass through (images N,C,H,W standardized per channel, sequences N,T,F per feature);
    data.shape views flat rows as samples, and transform() takes raw rows the same way."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2, 3, 3)) * np.array([1.0, 10.0]).reshape(1, 2, 1, 1) + 5.0
    spec = make_spec(val_fraction=0.25, standardize=True)
    ds = dataset_from_arrays(x, rng.integers(0, 2, 40), spec)
    assert ds.sample_shape == (2, 3, 3) and ds.mean.shape == (2, 1, 1) and ds.train.x.dtype == np.float32
    per_channel = ds.train.x.transpose(1, 0, 2, 3).reshape(2, -1)
    assert np.allclose(per_channel.mean(axis=1), 0, atol=1e-5) and np.allclose(per_channel.std(axis=1), 1, atol=1e-4)
    seq = dataset_from_arrays(rng.normal(size=(40, 5, 3)), rng.integers(0, 2, 40), spec)
    assert seq.sample_shape == (5, 3) and seq.mean.shape == (3,)

    viewed = load_dataset(make_spec("sklearn:digits", shape=[1, 8, 8]))
    assert viewed.sample_shape == (1, 8, 8) and viewed.in_features == 64
    from sklearn.datasets import load_digits

    assert viewed.transform(load_digits().data[:3]).shape == (3, 1, 8, 8)
    with pytest.raises(DataError) as e:
        load_dataset(make_spec("sklearn:digits", shape=[3, 8, 8]))
    assert_one_line(e, "data.shape", "192 values per sample", "64")


def test_one_d_x_becomes_one_column():
    ds = dataset_from_arrays([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1], make_spec(val_fraction=0.0))
    assert ds.train.x.shape == (4, 1) and ds.in_features == 1


# -- csv -----------------------------------------------------------------------------------------------

def test_csv_source_target_features_and_base_dir(tmp_path, monkeypatch):
    data_dir = tmp_path / "specdir"
    data_dir.mkdir()
    write_csv(data_dir / "d.csv", """
        a,b,label,c
        1,2,x,3
        4,5,y,6

        7,8,x,9
        1.5,-2e1,y,0
    """)
    monkeypatch.chdir(tmp_path)  # the file is not in the cwd: found via base_dir
    ds = load_dataset(make_spec("csv:d.csv", target="label", val_fraction=0.0), base_dir=str(data_dir))
    assert ds.feature_names == ["a", "b", "c"] and ds.classes == ["x", "y"]
    np.testing.assert_array_equal(ds.train.x[3], [1.5, -20.0, 0.0])
    np.testing.assert_array_equal(ds.train.y, [0, 1, 0, 1])
    ds = load_dataset(make_spec("csv:specdir/d.csv", target="label", features=["c", "a"], val_fraction=0.0))
    assert ds.feature_names == ["c", "a"]
    np.testing.assert_array_equal(ds.train.x[:, 0], [3, 6, 9, 0])


def test_csv_default_target_is_last_column(tmp_path):
    p = write_csv(tmp_path / "r.csv", "f1,f2,target\n1,2,0.5\n2,3,1.5\n3,4,2.5\n4,5,3.5\n")
    ds = load_dataset(make_spec(f"csv:{p}", task="regression", val_fraction=0.0))
    assert ds.feature_names == ["f1", "f2"]
    np.testing.assert_allclose(ds.train.y, [0.5, 1.5, 2.5, 3.5])


@pytest.mark.parametrize("text, spec_kw, parts", [
    ("a,b,y\n1,2,0\n3,oops,1\n", {}, ["data.source", "'b'", "row 3", "'oops'", "cannot parse"]),
    ("a,b,y\n1,2,0\n3,,1\n", {}, ["data.source", "'b'", "row 3", "missing value"]),
    ("a,b,label\n1,2,0\n3,4,1\n", {"target": "lable"}, ["data.target", "unknown target column 'lable'",
                                                          "did you mean 'label'", "available columns: a, b, label"]),
    ("alpha,beta,y\n1,2,0\n3,4,1\n", {"features": ["alpah"]}, ["data.features", "did you mean 'alpha'"]),
    ("1,2,0\n3,4,1\n", {}, ["data.source", "header row"]),
    ("", {}, ["data.source", "empty"]),
    ("a,b,y\n1,2\n", {}, ["data.source", "row 2", "expected 3 cells"]),
    ("a,b,y\n", {}, ["data.source", "no data rows"]),
])
def test_csv_errors_are_one_line(tmp_path, text, spec_kw, parts):
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_dataset(make_spec(f"csv:{p}", val_fraction=0.0, **spec_kw))
    assert_one_line(e, *parts)
    if "row" in " ".join(parts):
        assert str(p) in str(e.value)


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(make_spec("csv:nope/missing.csv"), base_dir=str(tmp_path))
    assert_one_line(e, "data.source: file not found: nope/missing.csv")
    assert isinstance(e.value, SpecError) and e.value.path == "data.source"


# -- npz -----------------------------------------------------------------------------------------------

def test_npz_source_and_keys(tmp_path, rng):
    p = tmp_path / "d.npz"
    np.savez(p, features=rng.normal(size=(20, 3)), labels=np.arange(20) % 4)
    ds = load_dataset(make_spec(f"npz:{p}", x_key="features", y_key="labels"))
    assert ds.in_features == 3 and ds.num_classes == 4 and len(ds.train) == 16
    with pytest.raises(DataError) as e:
        load_dataset(make_spec(f"npz:{p}"))
    assert_one_line(e, "data.source", "no array 'x'", "keys present: features, labels")


# -- parquet -------------------------------------------------------------------------------------------

def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    p = tmp_path / "d.parquet"
    p.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError) as e:
        load_dataset(make_spec(f"parquet:{p}"))
    assert_one_line(e, "data.source", "pip install pyarrow")


def test_parquet_with_pyarrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [1, 2, 3, 4], "y": ["u", "v", "u", "v"]}), p)
    ds = load_dataset(make_spec(f"parquet:{p}", val_fraction=0.0))
    assert ds.feature_names == ["a", "b"] and ds.classes == ["u", "v"]


# -- python source -------------------------------------------------------------------------------------

PY_SOURCE = '''
import numpy as np

def pair(n=10):
    x = np.arange(n * 2, dtype=float).reshape(n, 2)
    return x, np.arange(n) % 2

def as_dict(n=10):
    x, y = pair(n)
    return {"x": x, "y": y, "feature_names": ["p", "q"]}

def splits():
    x, y = pair(12)
    return {"train": (x[:8], y[:8]), "val": (x[8:], y[8:])}

def bad():
    return 42

not_callable = 3
'''


@pytest.fixture
def py_module(tmp_path, monkeypatch):
    (tmp_path / "my_data_mod.py").write_text(PY_SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield "my_data_mod"
    sys.modules.pop("my_data_mod", None)


def test_python_source_forms(py_module):
    ds = load_dataset(make_spec(f"python:{py_module}:pair", kwargs={"n": 20}))
    assert len(ds.train) + len(ds.val) == 20
    ds = load_dataset(make_spec(f"python:{py_module}:as_dict", val_fraction=0.0))
    assert ds.feature_names == ["p", "q"]
    ds = load_dataset(make_spec(f"python:{py_module}:splits", val_fraction=0.5))
    assert len(ds.train) == 8 and len(ds.val) == 4 and ds.test is None


def test_python_source_via_base_dir(tmp_path, monkeypatch):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "base_dir_mod.py").write_text(PY_SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    try:
        ds = load_dataset(make_spec("python:base_dir_mod:pair"), base_dir=str(sub))
        assert ds.in_features == 2
        assert str(sub) not in sys.path
    finally:
        sys.modules.pop("base_dir_mod", None)


@pytest.mark.parametrize("source, kwargs, parts", [
    ("python:no_such_module_xyz:f", {}, ["data.source", "cannot import module 'no_such_module_xyz'",
                                          "No module named"]),
    ("python:my_data_mod:missing", {}, ["data.source", "no function 'missing'"]),
    ("python:my_data_mod:not_callable", {}, ["data.source", "not a function"]),
    ("python:my_data_mod:bad", {}, ["data.source", "returned int", "expected (x, y)"]),
    ("python:my_data_mod:pair", {"m": 1}, ["data.kwargs", "unexpected keyword"]),
])
def test_python_source_errors(py_module, source, kwargs, parts):
    with pytest.raises(DataError) as e:
        load_dataset(make_spec(source, kwargs=kwargs))
    assert_one_line(e, *parts)


def test_dataclasses_are_plain():
    s = Split(np.zeros((3, 2), np.float32), np.zeros(3, np.int64))
    assert len(s) == 3
    assert isinstance(load_dataset(make_spec("sklearn:wine")), Dataset)
