"""PercentileNormalizer: fit, [-1, 1] mapping with clipping, inverse, constant dims, serialisation."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vpp_core.model.normalization import PercentileNormalizer


def sample_data(rows: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.uniform(-0.05, 0.05, rows),  # small delta translation
            rng.normal(3.0, 2.0, rows),  # wide, unbounded
            rng.uniform(0.0, 1.0, rows),  # gripper-like
        ],
        axis=1,
    )


def test_fit_uses_requested_percentiles():
    data = np.tile(np.arange(101, dtype=np.float64)[:, None], (1, 2))
    norm = PercentileNormalizer.fit(data)
    np.testing.assert_allclose(norm.low, [1.0, 1.0])
    np.testing.assert_allclose(norm.high, [99.0, 99.0])
    custom = PercentileNormalizer.fit(data, lower_percentile=5, upper_percentile=90)
    np.testing.assert_allclose(custom.low, [5.0, 5.0])
    np.testing.assert_allclose(custom.high, [90.0, 90.0])


def test_maps_percentile_bounds_to_unit_interval_and_clips_outliers():
    data = sample_data()
    norm = PercentileNormalizer.fit(data)
    np.testing.assert_allclose(norm.normalize(norm.low), -np.ones(3))
    np.testing.assert_allclose(norm.normalize(norm.high), np.ones(3))
    normalised = norm.normalize(data)
    assert normalised.min() >= -1.0 and normalised.max() <= 1.0
    # About 1% of each dimension lies beyond each bound and is clipped onto it.
    at_upper = (normalised == 1.0).mean(axis=0)
    assert np.all((at_upper > 0.005) & (at_upper < 0.02))
    far = norm.high + 100.0
    np.testing.assert_allclose(norm.normalize(far), np.ones(3))


def test_round_trip_inside_the_fitted_range():
    data = sample_data()
    norm = PercentileNormalizer.fit(data)
    inside = np.clip(data, norm.low, norm.high)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(inside)), inside, atol=1e-12)
    # Leading dimensions are preserved: [batch, horizon, D] chunks.
    chunks = inside[:40].reshape(4, 10, 3)
    assert norm.normalize(chunks).shape == (4, 10, 3)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(chunks)), chunks, atol=1e-12)


def test_unnormalize_clips_out_of_range_model_output():
    norm = PercentileNormalizer(low=[-1.0, 0.0], high=[1.0, 10.0])
    np.testing.assert_allclose(norm.unnormalize(np.array([1.5, -3.0])), [1.0, 0.0])
    np.testing.assert_allclose(norm.unnormalize(np.array([0.0, 0.5])), [0.0, 7.5])


def test_constant_dimension_does_not_divide_by_zero():
    data = sample_data()
    data[:, 2] = 0.04  # e.g. a gripper that never moved
    norm = PercentileNormalizer.fit(data)
    assert norm.constant.tolist() == [False, False, True]
    with np.errstate(all="raise"):
        normalised = norm.normalize(data)
        restored = norm.unnormalize(normalised)
        shifted = norm.normalize(data + 1.0)
    assert np.all(normalised[:, 2] == 0.0) and np.all(shifted[:, 2] == 0.0)
    np.testing.assert_allclose(restored[:, 2], 0.04)
    tensor_out = norm.normalize(torch.from_numpy(data).float())
    assert torch.isfinite(tensor_out).all() and (tensor_out[:, 2] == 0).all()
    torch.testing.assert_close(norm.unnormalize(tensor_out)[:, 2], torch.full((len(data),), 0.04))


def test_torch_and_numpy_agree_and_keep_their_types():
    data = sample_data()
    norm = PercentileNormalizer.fit(torch.from_numpy(data))
    np.testing.assert_allclose(norm.low, PercentileNormalizer.fit(data).low)
    tensor = torch.from_numpy(data[:50]).float()
    normalised = norm.normalize(tensor)
    assert isinstance(normalised, torch.Tensor) and normalised.dtype == torch.float32
    np.testing.assert_allclose(normalised.numpy(), norm.normalize(data[:50]), atol=1e-6)
    restored = norm.unnormalize(normalised)
    assert isinstance(restored, torch.Tensor) and restored.dtype == torch.float32
    np.testing.assert_allclose(restored.numpy(), norm.unnormalize(norm.normalize(data[:50])), atol=1e-5)
    assert isinstance(norm.normalize(data), np.ndarray)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_values(bad):
    data = sample_data()
    broken = data.copy()
    broken[5, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        PercentileNormalizer.fit(broken)
    norm = PercentileNormalizer.fit(data)
    with pytest.raises(ValueError, match="NaN"):
        norm.normalize(broken)
    with pytest.raises(ValueError, match="NaN"):
        norm.unnormalize(torch.from_numpy(broken))
    with pytest.raises(ValueError, match="NaN"):
        PercentileNormalizer(low=[0.0, bad], high=[1.0, 1.0])


def test_rejects_malformed_input():
    norm = PercentileNormalizer.fit(sample_data())
    with pytest.raises(ValueError):
        norm.normalize(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        PercentileNormalizer.fit(np.zeros(10))
    with pytest.raises(ValueError):
        PercentileNormalizer.fit(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        PercentileNormalizer.fit(sample_data(), lower_percentile=60, upper_percentile=40)
    with pytest.raises(ValueError):
        PercentileNormalizer(low=[1.0], high=[0.0])


def test_json_round_trip():
    norm = PercentileNormalizer.fit(sample_data(), lower_percentile=2, upper_percentile=97)
    restored = PercentileNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert restored.to_dict() == norm.to_dict()
    probe = sample_data(20, seed=3)
    np.testing.assert_array_equal(restored.normalize(probe), norm.normalize(probe))
    with pytest.raises(ValueError, match="unknown"):
        PercentileNormalizer.from_dict({**norm.to_dict(), "mean": [0.0]})


def test_safetensors_round_trip(tmp_path):
    data = sample_data()
    data[:, 0] = 1.5
    norm = PercentileNormalizer.fit(data, lower_percentile=1, upper_percentile=99)
    path = tmp_path / "stats.safetensors"
    save_file(norm.state_tensors(prefix="action."), str(path))
    restored = PercentileNormalizer.from_state_tensors(load_file(str(path)), prefix="action.")
    assert restored.to_dict() == norm.to_dict()
    assert restored.constant.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="missing"):
        PercentileNormalizer.from_state_tensors(load_file(str(path)))
