"""Which X25519 public keys a party accepts from a peer.

X25519 (RFC 7748) takes any 32 bytes as a public key: it ignores the top bit
and reduces the u-coordinate modulo p = 2^255 - 19.  Two consequences a
protocol has to close itself:

* **Non-canonical encodings.**  A key with the top bit set, or with
  u >= p, is the same point as another 32-byte string.  A distinctness check
  on raw bytes then passes for two copies of one key.  Only the canonical
  encoding (top bit clear, u < p) is accepted, so distinct bytes are distinct
  points.
* **Low-order points.**  The five u-coordinates of points whose order
  divides 8 (on the curve or its twist) give the all-zero shared secret for
  every clamped scalar; pyca then raises on the exchange, so one such key
  makes every honest peer abort.  The server refuses them when they are
  advertised, naming the client, and clients refuse them in the directory.

>>> check_public_key(bytes(32), 7, "s_pk")
Traceback (most recent call last):
...
secagg.errors.InvalidKey: client 7 advertised a low-order s_pk (u = 0)
"""

from __future__ import annotations

from secagg.errors import InvalidKey

__all__ = ["FIELD_PRIME", "LOW_ORDER_U", "check_public_key"]

#: p = 2^255 - 19, the field of Curve25519's u-coordinates.
FIELD_PRIME = 2**255 - 19
#: u-coordinates of the points of order dividing 8 on Curve25519 and its
#: twist: 0 (order 2), 1 (order 4), the two of order 8, and p - 1 (order 4
#: on the twist).  Each gives the all-zero X25519 output for any scalar.
LOW_ORDER_U = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        FIELD_PRIME - 1,
    }
)


def check_public_key(key: bytes, owner: int, what: str) -> None:
    """Raise :class:`InvalidKey` naming ``owner`` unless ``key`` is a canonical,
    non-low-order X25519 public key."""
    if not isinstance(key, bytes) or len(key) != 32:
        raise InvalidKey(f"client {owner} advertised a {what} that is not 32 bytes")
    if key[31] & 0x80:
        raise InvalidKey(
            f"client {owner} advertised a non-canonical {what} (top bit set)"
        )
    u = int.from_bytes(key, "little")
    if u >= FIELD_PRIME:
        raise InvalidKey(
            f"client {owner} advertised a non-canonical {what} (u >= 2^255 - 19)"
        )
    if u in LOW_ORDER_U:
        shown = u if u < 2 else "p - 1" if u == FIELD_PRIME - 1 else "order 8"
        raise InvalidKey(f"client {owner} advertised a low-order {what} (u = {shown})")
