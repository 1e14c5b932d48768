"""GITSScheduler (the published GITS table, log-linear beyond 20 steps) and ManualSigmas (a schedule
written as text), against the table's own rows and an independent numpy interpolation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from execution.errors import PlexusError
from nodes.builtin.custom_sampling import GITSScheduler, ManualSigmas
from sampling import schedules_extra, sigma_tools

TABLE = json.loads(schedules_extra.GITS_TABLE.read_text(encoding="utf-8"))["levels"]


def test_the_table_has_every_coefficient_and_step_count() -> None:
    assert list(TABLE) == [f"{0.80 + 0.05 * i:.2f}" for i in range(15)]
    for rows in TABLE.values():
        assert [len(row) for row in rows] == [steps + 1 for steps in range(2, 21)]
        for row in rows:
            assert row == sorted(row, reverse=True)          # descending noise levels
            assert row[0] == pytest.approx(14.61464119) and row[-1] == pytest.approx(0.02916753)  # SD1's range


@pytest.mark.parametrize("coeff,steps", [(1.2, 10), (0.8, 2), (1.5, 20), (1.05, 7)])
def test_tabled_step_counts_are_the_row_with_a_final_zero(coeff, steps) -> None:
    row = TABLE[f"{coeff:.2f}"][steps - 2]
    sigmas = schedules_extra.gits_sigmas(coeff, steps)
    assert sigmas.dtype == torch.float32 and len(sigmas) == steps + 1
    torch.testing.assert_close(sigmas[:-1], torch.tensor(row[:-1], dtype=torch.float32))
    assert sigmas[-1] == 0


def test_more_than_twenty_steps_interpolate_the_twenty_step_levels_in_log_space() -> None:
    row = np.asarray(TABLE["1.20"][-1], dtype=np.float64)
    # log sigma as a piecewise-linear function of the position in [0, 1], sampled at 31 points
    positions = np.linspace(0, 1, len(row))
    expected = np.exp(np.interp(np.linspace(0, 1, 31), positions, np.log(row[::-1])))[::-1].copy()
    expected[-1] = 0.0
    torch.testing.assert_close(schedules_extra.gits_sigmas(1.2, 30), torch.tensor(expected, dtype=torch.float32))


def test_denoise_keeps_the_last_steps_and_zero_denoise_is_empty() -> None:
    half = schedules_extra.gits_sigmas(1.2, 10, denoise=0.5)
    row = torch.tensor(TABLE["1.20"][8], dtype=torch.float32)
    torch.testing.assert_close(half[:-1], row[-6:-1])
    assert half[-1] == 0 and len(half) == 6
    assert len(schedules_extra.gits_sigmas(1.2, 10, denoise=0.0)) == 0


def test_coefficients_off_the_grid_and_one_step_are_refused() -> None:
    with pytest.raises(ValueError, match="coeff"):
        schedules_extra.gits_sigmas(1.22, 10)
    with pytest.raises(ValueError, match="2 steps"):
        schedules_extra.gits_sigmas(1.2, 1)


def test_the_node_rounds_the_widget_value_to_the_grid() -> None:
    (sigmas,) = GITSScheduler().run(coeff=1.2000000001, steps=4, denoise=1.0)
    torch.testing.assert_close(sigmas[:-1], torch.tensor(TABLE["1.20"][2][:-1], dtype=torch.float32))


@pytest.mark.parametrize("text,expected", [
    ("1, 0.5", [1.0, 0.5]),
    ("1., 0.99375, 0.9875, 0.0", [1.0, 0.99375, 0.9875, 0.0]),      # the LTX-2 templates write "1."
    ("0.85, 0.7250, 0.4219, 0.0", [0.85, 0.725, 0.4219, 0.0]),
    ("14.61\n7.49  0.03,0", [14.61, 7.49, 0.03, 0.0]),
    ("  ", []),
    ("1e-3, .5", [0.001, 0.5]),
])
def test_manual_sigmas_reads_the_numbers_in_order(text, expected) -> None:
    (sigmas,) = ManualSigmas().run(sigmas=text)
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, torch.tensor(expected, dtype=torch.float32))


def test_manual_sigmas_names_what_is_not_a_number() -> None:
    with pytest.raises(PlexusError) as caught:
        ManualSigmas().run(sigmas="1.0, half, 0")
    assert "'half'" in caught.value.details and "sigmas" in caught.value.message
    with pytest.raises(ValueError):
        sigma_tools.parse_sigmas("1..0")
