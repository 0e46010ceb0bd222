"""One negative test per client check: policy, key directory, shares,
Unmasking lists, secrets discarded.

Each asserts the error type and message, and that nothing was released: the
client's state object is the very same one and it still holds its secrets.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

from secagg import (
    ClientPolicy,
    InvalidInput,
    InvalidKey,
    InvalidMessage,
    InvalidShare,
    PolicyViolation,
    ProtocolError,
    Round,
    SecAggClient,
    SecAggError,
    TooFewSurvivors,
    crypto,
    quantize_input,
)
from secagg.messages import (
    SHARE_CIPHERTEXT_BYTES,
    KeyDirectory,
    KeyEntry,
    SharePlaintext,
    ShareRelay,
    UnmaskRequest,
    UnmaskResponse,
)
from tests.secagg.conftest import config, drive, quantized, refuses

# Check 1: configuration within the client's own policy ----------------------


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (ClientPolicy(min_cohort=5), "cohort of 4 is below this client's minimum of 5"),
        (
            ClientPolicy(min_threshold_fraction=0.75),
            "threshold 2 is below this client's minimum of 3 for a cohort of 4",
        ),
        (ClientPolicy(min_threshold=3), "threshold 2 is below this client's minimum"),
        (
            ClientPolicy(max_weight_cap=7),
            "max_weight 15 exceeds this client's cap of 7",
        ),
    ],
)
def test_policy_refuses_config(policy: ClientPolicy, message: str) -> None:
    with pytest.raises(PolicyViolation, match=message):
        SecAggClient(config(n=4, t=2), 0, policy=policy)


# Check 3: keys distinct, valid, own keys exactly once, at least t -------------


def _directory(data: bytes, edit: Callable[[list[KeyEntry]], list[KeyEntry]]) -> bytes:
    entries = list(KeyDirectory.from_bytes(data).entries)
    return KeyDirectory(entries=tuple(edit(entries))).to_bytes()


def _set(entries: list[KeyEntry], i: int, **kw: bytes) -> list[KeyEntry]:
    e = entries[i]
    entries[i] = KeyEntry(
        client_id=e.client_id, c_pk=kw.get("c_pk", e.c_pk), s_pk=kw.get("s_pk", e.s_pk)
    )
    return entries


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda e: e[1:], InvalidKey, "own keys are missing from the key directory"),
        (
            lambda e: _set(e, 0, c_pk=os.urandom(32)),
            InvalidKey,
            "own entry in the key directory has other keys",
        ),
        (
            lambda e: _set(e, 2, s_pk=e[1].s_pk),
            InvalidKey,
            "advertised public keys are not all distinct",
        ),
        (
            lambda e: _set(e, 1, c_pk=bytes(32)),
            InvalidKey,
            r"client 1 advertised a low-order c_pk \(u = 0\)",
        ),
        (
            lambda e: e[:2],
            TooFewSurvivors,
            "only 2 clients advertised keys; threshold is 3",
        ),
        (
            lambda e: [
                *e,
                KeyEntry(client_id=9, c_pk=os.urandom(32), s_pk=os.urandom(32)),
            ],
            ProtocolError,
            "key directory lists 5 clients, more than the announced cohort of 4",
        ),
    ],
)
def test_share_keys_checks(
    edit: Callable[[list[KeyEntry]], list[KeyEntry]],
    error: type[SecAggError],
    message: str,
) -> None:
    run = drive(config(n=4, t=3), Round.SHARE_KEYS)
    client = run.clients[0]
    forged = _directory(run.requests[0], edit)
    refuses(client, lambda: client.share_keys(forged), error, message)


def test_share_keys_twice_is_refused() -> None:
    run = drive(config(n=4, t=3), Round.SHARE_KEYS)
    client = run.clients[0]
    client.share_keys(run.requests[0])
    refuses(
        client,
        lambda: client.share_keys(run.requests[0]),
        ProtocolError,
        "cannot share keys in phase shared",
    )


# Check 4: decrypted shares name the right sender and receiver ---------------


Sealed = tuple[int, bytes, bytes]  # (sender, ciphertext, share commitments)


def _relay(data: bytes, edit: Callable[[list[Sealed]], object]) -> bytes:
    relay = ShareRelay.from_bytes(data)
    bound = dict(relay.commitments)
    sealed = [(v, ct, bound[v]) for v, ct in relay.ciphertexts]
    edit(sealed)
    return ShareRelay(
        receiver=relay.receiver,
        ciphertexts=tuple((v, ct) for v, ct, _ in sealed),
        commitments=tuple((v, c) for v, _, c in sealed),
    ).to_bytes()


def _forged_share(
    run_clients: dict[int, SecAggClient],
) -> Callable[[list[Sealed]], None]:
    # Client 1 is malicious: it encrypts under the genuine channel key, so the
    # AEAD verifies, but the plaintext claims to come from client 2.
    st = run_clients[1]._state
    plaintext = SharePlaintext(
        sender=2, receiver=0, key_share=0, seed_share=0
    ).to_bytes()
    bound = bytes(64)
    ct = crypto.encrypt_share(st.channel_keys[0], st.session, 1, 0, plaintext, bound)

    def edit(cts: list[Sealed]) -> None:
        cts[0] = (1, ct, bound)

    return edit


def test_masked_input_checks() -> None:
    run = drive(config(n=4, t=3), Round.MASKED_INPUT)
    client, msg = run.clients[0], run.requests[0]
    q = quantized(run.cfg)

    def call(data: bytes) -> Callable[[], bytes]:
        return lambda: client.masked_input(data, q)

    refuses(
        client,
        call(run.requests[1]),
        ProtocolError,
        "share relay is addressed to client 1, not 0",
    )
    stranger = _relay(
        msg, lambda c: c.append((7, bytes(SHARE_CIPHERTEXT_BYTES), bytes(64)))
    )
    refuses(
        client,
        call(stranger),
        ProtocolError,
        r"shares relayed from clients that are not my neighbours: \[7\]",
    )
    refuses(
        client,
        call(_relay(msg, lambda c: c.__delitem__(slice(1, None)))),
        TooFewSurvivors,
        "only 2 clients shared keys; threshold is 3",
    )

    def flip(c: list[Sealed]) -> None:
        c[1] = (c[1][0], bytes([c[1][1][0] ^ 1]) + c[1][1][1:], c[1][2])

    def swap_commitment(c: list[Sealed]) -> None:
        # A relay that alters a dealer's commitments fails authentication.
        c[1] = (c[1][0], c[1][1], bytes(64))

    refuses(
        client,
        call(_relay(msg, flip)),
        InvalidShare,
        "share from client 2 to client 0 failed to authenticate",
    )
    refuses(
        client,
        call(_relay(msg, swap_commitment)),
        InvalidShare,
        "share from client 2 to client 0 failed to authenticate",
    )
    refuses(
        client,
        call(_relay(msg, _forged_share(run.clients))),
        InvalidShare,
        "share relayed from client 1 names the wrong sender or receiver",
    )
    wrong = quantize_input(np.zeros(8), 1, config(n=4, t=3, ring_bits=40))
    refuses(
        client,
        lambda: client.masked_input(msg, wrong),
        InvalidInput,
        "quantised update does not match the configuration",
    )
    # Every check passed through untouched: the genuine relay still works.
    assert client.masked_input(msg, q)


# Check 5: survivor / dropped lists -------------------------------------------


def _request(survivors: tuple[int, ...], dropped: tuple[int, ...]) -> bytes:
    return UnmaskRequest(survivors=survivors, dropped=dropped).to_bytes()


@pytest.mark.parametrize(
    ("survivors", "dropped", "error", "message"),
    [
        ((0, 1, 2, 3), (3, 4), ProtocolError, r"lists overlap: \[3\]"),
        ((1, 2, 3), (0,), ProtocolError, "this client is listed as dropped"),
        ((1, 2, 3, 4), (), ProtocolError, "missing from the survivor list"),
        ((0, 1, 2, 9), (), ProtocolError, r"never advertised keys: \[9\]"),
        ((0, 1), (2, 3), TooFewSurvivors, "only 2 survivors; threshold is 3"),
    ],
)
def test_unmask_list_checks(
    survivors: tuple[int, ...],
    dropped: tuple[int, ...],
    error: type[SecAggError],
    message: str,
) -> None:
    run = drive(config(n=5, t=3), Round.UNMASKING)
    client = run.clients[0]
    data = _request(survivors, dropped)
    refuses(client, lambda: client.unmask(data), error, message)


def test_unmask_refuses_neighbour_that_never_shared() -> None:
    run = drive(config(n=5, t=3), Round.UNMASKING, absent={4: Round.SHARE_KEYS})
    client = run.clients[0]
    data = _request((0, 1, 2), (4,))
    refuses(
        client,
        lambda: client.unmask(data),
        ProtocolError,
        r"lists neighbours that never shared keys with this client: \[4\]",
    )


def test_one_answer_per_session_and_secrets_discarded() -> None:
    run = drive(config(n=5, t=3), Round.UNMASKING)
    client = run.clients[0]
    data = _request((0, 1, 2), (3, 4))
    response = UnmaskResponse.from_bytes(client.unmask(data))
    # Seeds of survivors, keys of the dropped, never both for one client.
    assert [v for v, _ in response.seed_shares] == [0, 1, 2]
    assert [v for v, _ in response.key_shares] == [3, 4]
    assert not client.holds_secrets
    before = client._state
    with pytest.raises(ProtocolError, match="already answered an Unmasking request"):
        client.unmask(_request((0, 1, 2, 3, 4), ()))
    assert client._state is before


def test_both_kinds_of_share_cannot_even_be_encoded() -> None:
    with pytest.raises(InvalidMessage, match="both kinds of share"):
        UnmaskResponse(sender=0, seed_shares=((3, 5),), key_shares=((3, 5),))


# Check 6: secrets discarded -------------------------------------------------


def test_abort_discards_secrets() -> None:
    run = drive(config(n=4, t=3), Round.MASKED_INPUT)
    client = run.clients[2]
    assert client.holds_secrets
    client.abort()
    assert not client.holds_secrets
    with pytest.raises(
        ProtocolError, match="cannot send a masked input in phase aborted"
    ):
        client.masked_input(run.requests[2], quantized(run.cfg))
