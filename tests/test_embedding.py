"""The Fréchet distance between two sets of features, against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.analysis.embedding import frechet_distance


def _gaussians(mean_a, cov_a, mean_b, cov_b):
    """The closed form for two Gaussians: |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)."""
    values, vectors = np.linalg.eigh(cov_a)
    root_a = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    inner_values = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * np.sqrt(inner_values.clip(0)).sum())


def test_identical_sets_are_at_distance_zero():
    features = np.random.default_rng(0).normal(size=(400, 6))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_a_shift_adds_its_squared_length():
    features = np.random.default_rng(1).normal(size=(500, 5))
    shift = np.array([3.0, 0.0, -1.0, 0.5, 2.0])
    assert frechet_distance(features, features + shift) == pytest.approx(float((shift**2).sum()), rel=1e-9)


def test_scaled_and_shifted_set_matches_the_closed_form():
    """b = 0.5 a + 3: C_b = C_a / 4, so the trace term is tr(C_a) (1 + 1/4 - 2 / 2) = tr(C_a) / 4."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 4))
    b = 0.5 * a + 3.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = _gaussians(a.mean(0), cov_a, b.mean(0), cov_b)
    shift = ((0.5 * a.mean(0) + 3.0 - a.mean(0)) ** 2).sum()
    assert expected == pytest.approx(shift + np.trace(cov_a) / 4, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_rank_deficient_covariances_give_a_finite_distance():
    """Fewer samples than features (a singular covariance): still finite and non-negative, no warning."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) + 1.0
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0
