"""ParamSpec: flat vector round trips, buffers, dtypes, devices, mismatches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from core import ParamSpec, ParamSpecError


def bn_model(device: str = "cpu") -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[2].double()  # a float64 layer next to float32 ones
    model.train()
    model[:2](torch.randn(8, 3))  # move BatchNorm's running stats off their init
    return model.to(device)


def test_spec_covers_float_entries_and_keeps_int_buffers_local() -> None:
    spec = ParamSpec.from_module(bn_model())
    assert [e.name for e in spec.entries] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "2.weight",
        "2.bias",
    ]
    assert spec.local_buffers == ("1.num_batches_tracked",)
    assert spec.numel == (12 + 4) + 4 * 4 + (8 + 2)
    assert spec.flat_dtype == torch.float64  # promoted: nothing loses precision


def _round_trip(device: str) -> None:
    source, target = bn_model(device), bn_model(device)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    target.state_dict()["1.num_batches_tracked"].fill_(7)
    spec = ParamSpec.from_module(source)
    flat = spec.flatten(source)
    assert flat.device.type == device and flat.dim() == 1

    unflat = spec.unflatten(flat)
    for name, tensor in source.state_dict().items():
        if name == "1.num_batches_tracked":
            assert name not in unflat
            continue
        assert unflat[name].dtype == tensor.dtype
        assert unflat[name].device == tensor.device
        assert torch.equal(unflat[name], tensor)

    spec.load_into(target, flat)
    for name, tensor in source.state_dict().items():
        if name == "1.num_batches_tracked":
            # Counters are not federated: the receiver keeps its own.
            assert int(target.state_dict()[name]) == 7
        else:
            assert torch.equal(target.state_dict()[name], tensor)
    assert torch.equal(spec.flatten(target), flat)


def test_round_trip_with_batchnorm_keeps_dtype_and_device() -> None:
    _round_trip("cpu")


@pytest.mark.gpu
def test_round_trip_on_cuda() -> None:
    _round_trip("cuda")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=32, max_size=32))
def test_unflatten_then_flatten_is_identity(values: list[float]) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    spec = ParamSpec.from_module(model)
    flat = torch.tensor(values, dtype=spec.flat_dtype)
    assert torch.equal(spec.flatten(spec.unflatten(flat)), flat)


def test_wrong_shape_is_refused_and_nothing_changes() -> None:
    spec = ParamSpec.from_module(nn.Linear(3, 2))
    other = nn.Linear(4, 2)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ParamSpecError, match=r"'weight' must have shape \[2, 3\]"):
        spec.flatten(other)
    with pytest.raises(ParamSpecError, match="'weight' must have shape"):
        spec.load_into(other, spec.zeros())
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_wrong_names_and_lengths_are_refused() -> None:
    spec = ParamSpec.from_module(nn.Linear(3, 2))
    with pytest.raises(ParamSpecError, match=r"missing \['bias'\]"):
        spec.flatten({"weight": torch.zeros(2, 3)})
    with pytest.raises(ParamSpecError, match=r"unexpected \['extra'\]"):
        spec.flatten(
            {
                "weight": torch.zeros(2, 3),
                "bias": torch.zeros(2),
                "extra": torch.ones(1),
            }
        )
    with pytest.raises(ParamSpecError, match="1-D with 8 elements; found shape"):
        spec.unflatten(torch.zeros(9))
    with pytest.raises(ParamSpecError, match=r"dtype torch\.float32; found"):
        spec.flatten(
            {"weight": torch.zeros(2, 3, dtype=torch.float64), "bias": torch.zeros(2)}
        )


def test_fingerprint_tells_layouts_apart() -> None:
    a = ParamSpec.from_module(nn.Linear(3, 2))
    assert a.fingerprint() == ParamSpec.from_module(nn.Linear(3, 2)).fingerprint()
    assert a.fingerprint() != ParamSpec.from_module(nn.Linear(2, 3)).fingerprint()
    assert (
        a.fingerprint() != ParamSpec.from_module(nn.Linear(3, 2).double()).fingerprint()
    )


def test_state_without_float_entries_is_refused() -> None:
    with pytest.raises(ParamSpecError, match="no floating-point entries"):
        ParamSpec.from_state_dict({"count": torch.zeros(1, dtype=torch.long)})
