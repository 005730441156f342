"""Request values to batches (numpy only, no server): N-D samples, token ids, one-line reasons."""

from __future__ import annotations

import numpy as np
import pytest

from unified.serve.tensors import BadRequest, parse_inputs, to_batch


def test_nd_samples_keep_their_shape():
    x = to_batch(np.arange(2 * 1 * 8 * 8).reshape(2, 1, 8, 8).tolist(), (1, 8, 8), 10)
    assert x.shape == (2, 1, 8, 8) and x.dtype == np.float32
    assert to_batch([[[1, 2], [3, 4]]], (None, 2), 10).shape == (1, 2, 2)  # a sequence of any length


def test_token_ids_stay_integers():
    x = to_batch([[1, 2, 3], [4.0, 5, 6]], (3,), 10, dtype="int64")
    assert x.dtype == np.int64 and x.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("value,shape,dtype,status,reason", [
    ([[[1, 2]], [[3]]], (1, 2), "float32", 422, "inputs[1][0] has 1 values, expected 2"),
    ([[1, 2]], (1, 2), "float32", 422, "inputs[0] has 2 items, expected 1"),
    (np.zeros((1, 2, 8, 8)).tolist(), (1, 8, 8), "float32", 422, "must have shape [1, 8, 8], got [2, 8, 8]"),
    ([[1.5, 2.0]], (2,), "int64", 422, "inputs[0][0] = 1.5 is not an integer"),
    ([[1, 2]] * 11, (2,), "float32", 413, "at most 10 per request"),
], ids=["ragged", "too-shallow", "wrong-sample-shape", "fraction-as-token", "too-many-rows"])
def test_bad_values_name_the_first_problem(value, shape, dtype, status, reason):
    with pytest.raises(BadRequest) as e:
        to_batch(value, shape, 10, dtype=dtype)
    assert e.value.status == status and reason in e.value.detail and "\n" not in e.value.detail


def test_predict_body_nan_and_huge_numbers():
    with pytest.raises(BadRequest, match="inputs hold NaN"):
        parse_inputs(b'{"inputs": [[NaN, 1]]}', 2, 10)
    with pytest.raises(BadRequest, match=r"inputs\[0\]\[1\] = inf is not a finite float32"):
        parse_inputs(b'{"inputs": [[1, 1e999]]}', 2, 10)
    assert parse_inputs(b'{"inputs": [[1, 2]]}', 2, 10).tolist() == [[1.0, 2.0]]
