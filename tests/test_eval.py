"""Metric definitions, BD-rate, the oracle search and the binary search, against hand-computed values."""

import itertools
import math

import numpy as np
import pytest
from benchmarks.peers import binary_search_rate, oracle_rates

from infotok.metrics import bd_rate, frechet_distance, psnr, psnr_at, ssim


def test_psnr_is_tokenbench_mse_over_all_frames():
    ref = np.zeros((2, 4, 4, 3), np.uint8)
    dis = ref.copy()
    dis[0, 0, 0, 0] = 10  # one pixel off by 10 over 96 values: MSE = 100 / 96
    assert psnr(ref, dis) == pytest.approx(10 * math.log10(255**2 / (100 / 96)))
    assert psnr(ref, ref) == float("inf")


def test_ssim_of_identical_frames_is_one_and_drops_with_noise():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = np.clip(ref + rng.normal(0, 40, ref.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(ref, noisy) < 0.9


def test_ssim_matches_a_hand_computed_constant_image_value():
    # constant frames a and b: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 100.0, 120.0
    ref, dis = np.full((1, 16, 16, 3), a, np.uint8), np.full((1, 16, 16, 3), b, np.uint8)
    c1 = (0.01 * 255) ** 2
    # float32 arithmetic (as in evaluation) leaves ~1e-4 of cancellation error in the variances
    assert ssim(ref, dis) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=5e-4)


def test_bd_rate_of_a_curve_shifted_to_half_the_rate_is_minus_fifty_percent():
    rates = np.array([0.25, 0.5, 0.75, 1.0])
    quality = 30 + 4 * np.log2(rates)
    assert bd_rate(rates, quality, rates / 2, quality) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(rates, quality, rates, quality) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rates, quality, rates * 1.1, quality) == pytest.approx(10.0, abs=1e-6)


def test_oracle_matches_exhaustive_search_on_a_toy_problem():
    rng = np.random.default_rng(1)
    grid = [k / 4 for k in range(1, 5)]
    quality = np.sort(rng.uniform(20, 40, (5, 4)), axis=1)  # each clip improves with rate
    for avg in (0.25, 0.5, 0.6, 1.0):
        picks, mean_q = oracle_rates(quality, grid, avg)
        best = max(
            (np.mean([quality[i, j] for i, j in enumerate(c)]), c)
            for c in itertools.product(range(4), repeat=5)
            if np.mean([grid[j] for j in c]) <= avg + 1e-9
        )
        assert mean_q == pytest.approx(best[0])
        assert np.mean(picks) <= avg + 1e-9


def test_binary_search_finds_the_fewest_tokens_in_log_passes():
    calls = []

    def mse_at(k):  # error falls with k; threshold met from k = 11 on
        calls.append(k)
        return 1.0 / k

    k, passes = binary_search_rate(mse_at, levels=16, threshold=1 / 11)
    assert k == 11 and passes == len(calls) == 4  # ceil(log2 16)
    assert binary_search_rate(lambda k: 1.0, 16, 0.5) == (16, 4)  # never met: all tokens
    assert binary_search_rate(lambda k: 0.0, 16, 0.5) == (1, 4)


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(0, 2, (20000, 3)) + np.array([1.0, 0, 0])
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_linear_bd_rate_reads_curves_that_flatten_at_full_quality():
    rates, psnr = [0.2, 0.4, 0.6, 0.8], [20.0, 24.0, 26.0, 27.0]
    assert bd_rate(rates, psnr, [r / 2 for r in rates], psnr, fit="linear") == pytest.approx(-50.0, abs=1e-6)
    flat = [0.2, 0.4, 0.6, 0.8, 1.0], [22.0, 26.0, 27.0, 27.0, 27.0]  # saturated: more tokens buy nothing
    assert -60 < bd_rate(rates, psnr, *flat, fit="linear") < 0


def test_psnr_at_reads_a_curve_linearly_in_log_rate_and_never_beyond_it():
    rates, quality = [0.1, 0.2, 0.4, 0.8], [20.0, 23.0, 25.0, 24.0]  # the last point no longer raises the PSNR
    assert psnr_at(rates, quality, 0.2) == pytest.approx(23.0)
    assert psnr_at(rates, quality, 0.2 * 2**0.5) == pytest.approx(24.0)  # halfway in log rate
    assert np.isnan(psnr_at(rates, quality, 0.05))
    assert np.isnan(psnr_at(rates, quality, 0.6))  # past the last rising point: a guess, not a reading
