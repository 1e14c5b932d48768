"""Default-mode images against `--force-fp32` images (bench/quality.py) on the tiny random checkpoint.

Both precisions run the real txt2img prompt through the app main.py builds, so the distance covers the
dtype policy as it is: on a CPU with native bf16 the UNet (and VAE) compute in bf16 by default.

The bound: measured at 64x64, 2 steps, seeds 1-3, with the UNet alone in bf16 and with the UNet and the VAE
in bf16, the distance was max |d| 16-21, mean |d| 2.2-2.8 and PSNR 36.5-38.3 dB (uint8 scale), while two
samplers in one precision differed by at most 3. The test allows about three times the measured error
(max 64 = a quarter of the range, mean 8, PSNR >= 30 dB, i.e. twice the RMS error): loose enough for
another CPU's kernels, tight enough to catch a wrong cast (fp16 overflow, a lost upcast, a truncated dtype).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from quality import compare_precisions, pixel_distance

PAIRS = [("euler", "normal"), ("dpmpp_2m_sde", "karras")]
MAX_ABS_BOUND = 64
MEAN_ABS_BOUND = 8.0
PSNR_BOUND_DB = 30.0


def test_default_images_stay_near_force_fp32_images(tiny_sd15: Path) -> None:
    from nodes import services

    try:
        report = compare_precisions(tiny_sd15, PAIRS, size=64, steps=2, seed=1)
    finally:
        services.install(None)

    assert report["is_all_finite"]
    for row in report["pairs"]:
        for precision in ("default", "force_fp32"):
            assert 0.0 <= row[precision]["min"] <= row[precision]["max"] <= 1.0
    images = report["images"]
    for precision in ("default", "force_fp32"):
        first, second = (images[precision][f"{s}/{k}"] for s, k in PAIRS)
        assert first.shape == (64, 64, 3)
        assert pixel_distance(first, second).max_abs > 0, "each pair must be sampled, not served from a cache"

    unet_dtype = next(d for name, d in report["dtypes"]["default"].items() if "UNet" in name)
    assert report["dtypes"]["force_fp32"] and set(report["dtypes"]["force_fp32"].values()) == {"float32"}
    for row in report["pairs"]:
        if unet_dtype == "float32":          # a CPU without native bf16: default mode is fp32 too
            assert row["max_abs"] == 0
            continue
        assert row["max_abs"] > 0, f"{row['sampler']}: {unet_dtype} gave the fp32 image bit for bit"
        assert row["max_abs"] <= MAX_ABS_BOUND
        assert row["mean_abs"] <= MEAN_ABS_BOUND
        assert row["psnr_db"] >= PSNR_BOUND_DB


def test_pixel_distance_on_known_images() -> None:
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 12
    distance = pixel_distance(a, b)
    assert distance.max_abs == 12
    assert distance.mean_abs == 1.0
    assert abs(distance.psnr_db - 10 * np.log10(255 ** 2 / 12.0)) < 1e-9   # MSE = 144 / 12
    assert pixel_distance(a, a).psnr_db is None
