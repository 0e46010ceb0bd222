"""Wire messages: round trips, and fuzzing that only ever raises InvalidMessage.

Truncated and extended encodings must always be rejected; bit flips either
decode to some other well-formed message or raise InvalidMessage.  A party fed
a rejected message is left exactly as it was.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    InvalidMessage,
    Round,
    SecAggError,
    SecAggServer,
    SecurityMode,
)
from secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    SharePlaintext,
    ShareRelay,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.ring_numpy import NumpyRing
from secagg.signed_messages import (
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeyDirectory,
    SignedUnmaskRequest,
)
from tests.secagg.conftest import HARD, config, drive, member, quantized

Decoder = Callable[[bytes], Any]


@functools.cache
def samples() -> dict[str, tuple[Decoder, bytes]]:
    """One genuine encoding of every message type, from a real session."""
    cfg = config(n=4, t=3, d=5)
    run = drive(cfg, Round.SHARE_KEYS)
    c0 = run.clients[0]
    directory = run.requests[0]
    share_keys = c0.share_keys(directory)
    run2 = drive(cfg, Round.UNMASKING)
    relay_run = drive(cfg, Round.MASKED_INPUT)
    masked = relay_run.clients[0].masked_input(relay_run.requests[0], quantized(cfg))
    request = run2.requests[0]
    response = run2.clients[0].unmask(request)
    r20 = NumpyRing(20)
    odd = MaskedInput(
        sender=1,
        bits=20,
        length=7,
        payload=bytes(r20.to_wire(r20.from_signed(np.arange(-3, 4)))),
    ).to_bytes()
    plaintext = SharePlaintext(
        sender=2, receiver=5, key_share=2**256, seed_share=7
    ).to_bytes()
    hard = drive(config(n=4, t=3, d=5, mode=HARD), Round.SHARE_KEYS)
    check = drive(config(n=4, t=3, d=5, mode=HARD), Round.CONSISTENCY_CHECK)
    unmask = drive(config(n=4, t=3, d=5, mode=HARD), Round.UNMASKING)
    signed: dict[str, tuple[Decoder, bytes]] = {
        "signed_advertise": (
            SignedAdvertiseKeys.from_bytes,
            member(hard, 0, bytes(32)).advertise_keys(),
        ),
        "signed_directory": (SignedKeyDirectory.from_bytes, hard.requests[0]),
        "consistency_request": (ConsistencyRequest.from_bytes, check.requests[0]),
        "consistency_signature": (
            ConsistencySignature.from_bytes,
            check.clients[0].consistency_check(check.requests[0]),
        ),
        "signed_unmask_request": (SignedUnmaskRequest.from_bytes, unmask.requests[0]),
    }
    return signed | {
        "advertise": (
            AdvertiseKeys.from_bytes,
            AdvertiseKeys(sender=7, c_pk=bytes(32), s_pk=b"\x01" * 32).to_bytes(),
        ),
        "directory": (KeyDirectory.from_bytes, directory),
        "share_keys": (ShareKeys.from_bytes, share_keys),
        "relay": (ShareRelay.from_bytes, relay_run.requests[0]),
        "masked": (MaskedInput.from_bytes, masked),
        "masked20": (MaskedInput.from_bytes, odd),
        "request": (UnmaskRequest.from_bytes, request),
        "plaintext": (SharePlaintext.from_bytes, plaintext),
        "response": (UnmaskResponse.from_bytes, response),
    }


NAMES = sorted(samples())


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name: str) -> None:
    decode, data = samples()[name]
    assert decode(data).to_bytes() == data


@pytest.mark.parametrize("name", [n for n in NAMES if n != "plaintext"])
def test_wrong_version_and_type_rejected(name: str) -> None:
    decode, data = samples()[name]
    with pytest.raises(InvalidMessage, match="unsupported message version"):
        decode(b"\x02" + data[1:])
    with pytest.raises(InvalidMessage, match="not a "):
        decode(data[:1] + bytes([data[1] % 7 + 1]) + data[2:])


def _decode_or_invalid(decode: Decoder, data: bytes) -> bool:
    try:
        decode(data)
    except InvalidMessage:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_truncated_and_extended_always_rejected(name: str, data: st.DataObject) -> None:
    decode, raw = samples()[name]
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert not _decode_or_invalid(decode, raw[:cut])
    tail = data.draw(st.binary(min_size=1, max_size=40))
    assert not _decode_or_invalid(decode, raw + tail)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_bit_flips_only_raise_invalid_message(name: str, data: st.DataObject) -> None:
    decode, raw = samples()[name]
    flips = data.draw(
        st.lists(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=3)
    )
    buf = bytearray(raw)
    for bit in flips:
        buf[bit // 8] ^= 1 << (bit % 8)
    _decode_or_invalid(decode, bytes(buf))  # anything but InvalidMessage escapes


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(NAMES), blob=st.binary(max_size=300))
def test_garbage_only_raises_invalid_message(name: str, blob: bytes) -> None:
    decode, raw = samples()[name]
    _decode_or_invalid(decode, raw[:2] + blob)
    _decode_or_invalid(decode, blob)


def _server_snapshot(srv: SecAggServer) -> tuple[object, ...]:
    hardened = srv._hardened
    return (
        srv.round,
        dict(srv._adverts),
        {k: dict(v) for k, v in srv._shares.items()},
        set(srv._masked),
        srv._ring.to_host(srv._sum).tolist(),
        dict(srv._responses),
        dict(hardened.signatures) if hardened is not None else None,
    )


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["cut", "extend", "flip"]))
    if kind == "cut":
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    if kind == "extend":
        return raw + data.draw(st.binary(min_size=1, max_size=8))
    buf = bytearray(raw)
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf)


@functools.cache
def _server_run(rnd: Round, hardened: bool) -> tuple[SecAggServer, bytes]:
    """A server waiting in ``rnd`` and client 3's genuine message for it."""
    run = drive(
        config(n=4, t=3, d=5, mode=HARD if hardened else SecurityMode.SEMI_HONEST), rnd
    )
    c, request = run.clients[3], run.requests[3]
    if rnd is Round.SHARE_KEYS:
        return run.server, c.share_keys(request)
    if rnd is Round.MASKED_INPUT:
        return run.server, c.masked_input(request, quantized(run.cfg, 3))
    if rnd is Round.CONSISTENCY_CHECK:
        return run.server, c.consistency_check(request)
    return run.server, c.unmask(request)


SERVER_ROUNDS = [
    (Round.SHARE_KEYS, False),
    (Round.MASKED_INPUT, False),
    (Round.UNMASKING, False),
    (Round.SHARE_KEYS, True),
    (Round.CONSISTENCY_CHECK, True),
    (Round.UNMASKING, True),
]


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(SERVER_ROUNDS), data=st.data())
def test_server_state_unchanged_by_rejected_message(
    case: tuple[Round, bool], data: st.DataObject
) -> None:
    srv, raw = _server_run(*case)
    before = _server_snapshot(srv)
    try:
        srv.receive(3, _mutate(raw, data))
    except SecAggError:
        assert _server_snapshot(srv) == before
    else:
        # A flip that still decodes to an acceptable message: start afresh.
        _server_run.cache_clear()


CLIENT_ROUNDS = [
    (Round.SHARE_KEYS, False),
    (Round.SHARE_KEYS, True),
    (Round.CONSISTENCY_CHECK, True),
    (Round.UNMASKING, True),
]


@settings(max_examples=160, deadline=None)
@given(case=st.sampled_from(CLIENT_ROUNDS), data=st.data())
def test_client_state_unchanged_by_rejected_message(
    case: tuple[Round, bool], data: st.DataObject
) -> None:
    rnd, _ = case
    run = _client_run(*case)
    client = run.clients[0]
    before = client._state
    mutated = _mutate(run.requests[0], data)
    answer = {
        Round.SHARE_KEYS: client.share_keys,
        Round.CONSISTENCY_CHECK: client.consistency_check,
        Round.UNMASKING: client.unmask,
    }[rnd]
    try:
        answer(mutated)
    except SecAggError:
        assert client._state is before
        assert client.holds_secrets
    else:
        _client_run.cache_clear()


@functools.cache
def _client_run(rnd: Round, hardened: bool) -> Any:
    return drive(
        config(n=4, t=3, d=5, mode=HARD if hardened else SecurityMode.SEMI_HONEST), rnd
    )
