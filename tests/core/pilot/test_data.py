"""Preprocessing never pools institutions' rows.

Each institution imputes and standardises with statistics of its own training
rows; the attack is to change another institution's rows and look for any
change in this one's features. Imputed values are counted per institution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.data import impute_and_standardise_by_owner, standardise
from core.errors import DataError
from core.pilot.config_file import load_config
from core.pilot.data import load_pilot_data

_VALUES = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), st.just(np.nan)
)


@settings(max_examples=60, deadline=None)
@given(
    ours=arrays(np.float64, (6, 3), elements=_VALUES),
    theirs=arrays(np.float64, (5, 3), elements=_VALUES),
    other=arrays(np.float64, (5, 3), elements=_VALUES),
)
def test_an_owner_s_features_do_not_depend_on_another_owner_s_rows(
    ours: np.ndarray, theirs: np.ndarray, other: np.ndarray
) -> None:
    owner = np.array([0] * 6 + [1] * 5)
    fit = np.array([True] * 4 + [False] * 2 + [True] * 5)  # our last 2: test rows
    first, counts_a = impute_and_standardise_by_owner(
        np.concatenate([ours, theirs]), owner, fit
    )
    second, counts_b = impute_and_standardise_by_owner(
        np.concatenate([ours, other]), owner, fit
    )
    np.testing.assert_array_equal(first[:6], second[:6])
    assert counts_a[0] == counts_b[0] == int(np.isnan(ours).sum())
    assert counts_a[1] == int(np.isnan(theirs).sum())


def test_one_owner_is_the_single_table_transform_after_median_imputation() -> None:
    x = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, np.nan], [5.0, 40.0]])
    fit = np.array([True, True, True, False])
    got, counts = impute_and_standardise_by_owner(x, np.zeros(4, np.int64), fit)
    # Medians of the fit rows: 2.0 and 15.0.
    filled = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 15.0], [5.0, 40.0]])
    train, test = standardise(filled[:3], filled[3:])
    np.testing.assert_allclose(got, np.concatenate([train, test]))
    assert counts == {0: 2}


def test_an_owner_with_no_fit_rows_uses_its_own_and_an_all_missing_column_is_zero() -> (
    None
):
    x = np.array([[1.0, np.nan], [3.0, np.nan], [100.0, 7.0]])
    got, counts = impute_and_standardise_by_owner(
        x, np.array([-1, -1, 0]), np.array([False, False, True])
    )
    np.testing.assert_allclose(got[:2], [[-1.0, 0.0], [1.0, 0.0]])
    assert counts == {-1: 2, 0: 0}


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(DataError, match="one owner and one fit flag per row"):
        impute_and_standardise_by_owner(np.zeros((3, 2)), [0, 0], [True] * 3)


def _csv(path: Path, east_scale: float) -> None:
    rng = np.random.default_rng(0)
    lines = ["a,b,region,outcome"]
    for k in range(240):
        site = ("north", "south", "east")[k % 3]
        a, b = rng.normal(size=2)
        if site == "east":  # the other institution's rows change between runs
            a, b = a * east_scale + 50, b * east_scale
        cell = "" if site == "north" and k % 7 == 0 else f"{b:.4f}"
        lines.append(f"{a:.4f},{cell},{site},{'yes' if a > 0 else 'no'}")
    path.write_text("\n".join(lines) + "\n")


def test_a_site_s_rows_and_test_rows_ignore_another_site_s_data(tmp_path: Path) -> None:
    config = tmp_path / "pilot.toml"
    config.write_text(
        '[data]\nsource = "csv"\npath = "data.csv"\nlabel = "outcome"\n'
        'site = "region"\n[split]\nmethod = "natural"\n'
    )
    loaded = []
    for scale in (1.0, 30.0):
        _csv(tmp_path / "data.csv", scale)
        loaded.append(load_pilot_data(load_config(config)))
    before, after = loaded
    north = before.names.index("client north")
    for field in ("clients", "eval_sets"):
        b, a = getattr(before, field)[north], getattr(after, field)[north]
        assert b.features.equal(a.features) and b.labels.equal(a.labels)
    east = before.names.index("client east")
    assert not before.clients[east].features.equal(after.clients[east].features)
    # Each site is centred on its own rows.
    for client in before.clients:
        assert client.features.mean(dim=0).abs().max() < 1e-5
    # North's missing b values (every 7th of its rows) were counted, at north.
    assert before.imputed["client north"] == sum(
        1 for k in range(240) if k % 3 == 0 and k % 7 == 0
    )
    assert before.imputed["client east"] == before.imputed["client south"] == 0
    assert before.imputed_unheld == 0
