"""Every decoder and the quantiser raise only secagg's errors, on any input.

Decoders get objects of every type a caller or a transport might hand in:
non-buffers, bytearrays, strided and multi-dimensional memoryviews.  The
quantiser gets every kind of tensor and array: sparse, meta, quantised,
complex, integer, byte-swapped, extended precision, ragged lists.  Each case
either works (and then agrees with the plain encoding) or raises the named
error with a message saying what is accepted.
"""

from __future__ import annotations

import array
import contextlib
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg.signed_messages  # noqa: F401 (registers the signed messages)
from secagg import (
    ConfigError,
    InvalidInput,
    InvalidMessage,
    RingBackend,
    Round,
    SecAggClient,
    SecAggServer,
    quantize_input,
)
from secagg._wire import Message
from secagg.messages import AdvertiseKeys
from tests.secagg.conftest import config, drive, replay


def _messages(cls: type[Message]) -> list[type[Message]]:
    out = []
    for sub in cls.__subclasses__():
        # Only the classes the modules export (a slots dataclass replaces
        # the class its decorator received).
        if getattr(sys.modules[sub.__module__], sub.__name__, None) is sub:
            out.append(sub)
        out += _messages(sub)
    return out


# Every message class, imported through the ones that define them.
DECODERS = sorted(set(_messages(Message)), key=lambda c: c.__name__)
NOT_BUFFERS: list[Any] = [
    None,
    7,
    1.5,
    "bytes",
    [1, 2],
    {"a": 1},
    np.zeros(4, np.uint8),
    torch.zeros(4),
]
ADVERT = AdvertiseKeys(sender=3, c_pk=bytes(32), s_pk=bytes(range(32)))


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("data", NOT_BUFFERS, ids=lambda d: type(d).__name__)
def test_decoders_refuse_non_buffers_naming_what_is_accepted(
    cls: type[Message], data: Any
) -> None:
    with pytest.raises(
        InvalidMessage,
        match=rf"^message must be bytes, bytearray or memoryview, got "
        rf"{type(data).__name__}$",
    ):
        cls.from_bytes(data)


def _buffers(raw: bytes) -> dict[str, Any]:
    doubled = bytes(b for x in raw for b in (x, 0xAA))
    return {
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "strided": memoryview(doubled)[::2],
        "2-D": np.frombuffer(raw, np.uint8).reshape(1, -1).data,
        "readonly array": np.frombuffer(raw, np.uint8).data,
    }


@pytest.mark.parametrize("kind", list(_buffers(b"")))
def test_every_buffer_kind_decodes_like_bytes(kind: str) -> None:
    raw = ADVERT.to_bytes()
    assert AdvertiseKeys.from_bytes(_buffers(raw)[kind]) == ADVERT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            memoryview(array.array("I", [0x0701, 2, 3])),
            "^not a ADVERTISE_KEYS message$",
        ),
        (np.zeros((4, 4)).data[::2], "^unsupported message version$"),
        (bytearray(), "^message is truncated$"),
    ],
)
def test_odd_buffers_are_refused_by_content(data: Any, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        AdvertiseKeys.from_bytes(data)


_ANY = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(0, 255), max_size=20),
    st.binary(max_size=200),
    st.binary(max_size=200).map(bytearray),
    st.binary(max_size=200).map(lambda b: memoryview(b)),
    st.binary(min_size=2, max_size=400).map(lambda b: memoryview(b)[::2]),
    st.binary(max_size=50).map(lambda b: bytes([1, 5]) + b),
)


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(DECODERS), data=_ANY)
def test_decoders_raise_only_invalid_message(cls: type[Message], data: Any) -> None:
    with contextlib.suppress(InvalidMessage):  # anything else escapes and fails
        cls.from_bytes(data)


def test_parties_refuse_a_non_config() -> None:
    with pytest.raises(ConfigError, match="config must be a SecAggConfig, got"):
        SecAggClient({"num_clients": 3}, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy must be a ClientPolicy, got"):
        SecAggClient(config(), 0, policy="lenient")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config must be a SecAggConfig, got"):
        SecAggServer(None)  # type: ignore[arg-type]


def test_parties_refuse_non_bytes_with_invalid_message() -> None:
    run = drive(config(), Round.SHARE_KEYS)
    with pytest.raises(InvalidMessage, match="got str"):
        run.clients[0].share_keys("not bytes")  # type: ignore[arg-type]
    server = SecAggServer(config())
    with pytest.raises(InvalidMessage, match="got NoneType"):
        server.receive(0, None)  # type: ignore[arg-type]
    assert server._adverts == {}


# The quantiser ---------------------------------------------------------------

with warnings.catch_warnings():  # both kinds warn that they are beta/deprecated
    warnings.simplefilter("ignore", UserWarning)
    _CSR = torch.zeros(2, 3).to_sparse_csr()
    _QINT8 = torch.quantize_per_tensor(torch.zeros(6), 0.1, 0, torch.qint8)

BAD_VECTORS: list[tuple[str, Any, str]] = [
    ("sparse", torch.zeros(6).to_sparse(), "dense tensor, got layout torch.sparse_coo"),
    (
        "csr",
        torch.zeros(2, 3).to_sparse_csr(),
        "dense tensor, got layout torch.sparse_csr",
    ),
    ("meta", torch.zeros(6, device="meta"), "meta tensor: it holds no values"),
    ("int", torch.zeros(6, dtype=torch.int64), "float tensor, got torch.int64"),
    ("bool", torch.zeros(6, dtype=torch.bool), "float tensor, got torch.bool"),
    (
        "complex",
        torch.zeros(6, dtype=torch.cfloat),
        "float tensor, got torch.complex64",
    ),
    ("quantised", _QINT8, "float tensor, got torch.qint8"),
    ("2-D", torch.zeros(2, 3), r"1-D of length 6, got shape \(2, 3\)"),
    ("short", np.zeros(5), r"1-D of length 6, got shape \(5,\)"),
    ("int array", np.zeros(6, np.int32), "floating point, got int32"),
    ("objects", np.array([0.0] * 5 + [None]), "floating point, got object"),
    ("ragged", [[1.0], [1.0, 2.0]], "float tensor or array, got list"),
    ("text", "abcdef", "floating point, got str"),
    ("none", None, "floating point, got NoneType"),
    ("bytes", bytes(48), "floating point, got bytes"),
    ("nan", np.array([0.0] * 5 + [np.nan]), "NaN or infinite"),
    ("inf", torch.tensor([0.0] * 5 + [float("inf")]), "NaN or infinite"),
]


@pytest.mark.parametrize(
    ("vector", "message"),
    [(v, m) for _, v, m in BAD_VECTORS],
    ids=[n for n, _, _ in BAD_VECTORS],
)
def test_quantiser_refuses_every_bad_vector(
    vector: Any, message: str, backend: RingBackend
) -> None:
    with pytest.raises(InvalidInput, match=message):
        quantize_input(vector, 1, config(d=6), backend=backend)


GOOD_VECTORS: list[tuple[str, Any]] = [
    ("float16 array", np.linspace(-1, 1, 6).astype(np.float16)),
    ("byte-swapped", np.linspace(-1, 1, 6).astype(">f8")),
    ("long double", np.linspace(-1, 1, 6).astype(np.longdouble)),
    ("reversed view", np.linspace(1, -1, 6)[::-1]),
    ("strided tensor", torch.linspace(-1, 1, 12, dtype=torch.float64)[::2]),
    ("bfloat16", torch.linspace(-1, 1, 6).to(torch.bfloat16)),
    ("requires grad", torch.linspace(-1, 1, 6, requires_grad=True)),
    ("list", [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]),
]


@pytest.mark.parametrize(
    "vector", [v for _, v in GOOD_VECTORS], ids=[n for n, _ in GOOD_VECTORS]
)
def test_quantiser_takes_every_real_float_vector(
    vector: Any, backend: RingBackend
) -> None:
    cfg = config(d=6)
    got = quantize_input(vector, 2, cfg, entropy=replay(b"v"), backend=backend)
    # The same values as a plain float64 array give the same ring vector.
    if isinstance(vector, torch.Tensor):
        plain = vector.detach().to(torch.float64).numpy()
    else:
        plain = np.array(vector, dtype=np.float64)
    want = quantize_input(plain, 2, cfg, entropy=replay(b"v"), backend=backend)
    assert np.asarray(got.values).tolist() == np.asarray(want.values).tolist()


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (1.0, "weight must be an int, got float"),
        ("2", "weight must be an int, got str"),
        (None, "weight must be an int, got NoneType"),
        (True, "weight must be an int, got bool"),
        (0, "weight must be >= 1, got 0"),
        (-3, "weight must be >= 1, got -3"),
        (2**70, "weight 1180591620717411303424 exceeds max_weight 15"),
    ],
)
def test_quantiser_refuses_every_bad_weight(weight: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        quantize_input(np.zeros(6), weight, config(d=6))


def test_quantiser_refuses_a_non_config() -> None:
    with pytest.raises(InvalidInput, match="config must be a SecAggConfig, got"):
        quantize_input(np.zeros(6), 1, {"vector_length": 6})  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    vector=st.one_of(
        st.none(),
        st.text(max_size=8),
        st.lists(st.one_of(st.floats(), st.integers(), st.none()), max_size=8),
        st.binary(max_size=16),
        st.integers(),
    ),
    weight=st.one_of(st.integers(-5, 40), st.floats(), st.none(), st.text(max_size=2)),
)
def test_quantiser_raises_only_invalid_input(vector: Any, weight: Any) -> None:
    with contextlib.suppress(InvalidInput):  # anything else escapes and fails
        quantize_input(vector, weight, config(d=6))
