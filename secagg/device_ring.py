"""Where the ring lives during masking and summation: host numpy or torch.

:class:`RingBackend` picks it.  ``NUMPY`` (the CPU default) holds ring vectors
in numpy ``uint32``/``uint64`` containers and masks them with pyca's ChaCha20;
``TORCH`` (the default on any other device) keeps the update as an int64
tensor on the device from quantisation to the wire bytes: masks come from
:func:`secagg.prg_torch.signed_mask_sum` (the fused Triton kernel on CUDA),
and the only device-to-host copy is the masked vector's wire payload.  The
server side decodes each payload onto the device once, sums there, and
regenerates each dropped client's pair masks against all its surviving
neighbours in one call, in ``chunk_elems`` batches.  ``TORCH`` on a CPU
device runs that same code on CPU tensors, so CI cross-checks it bit for bit
against ``NUMPY``; the wire format is the same on both.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from secagg import prg, prg_torch, ring
from secagg.config import SecAggConfig
from secagg.errors import ConfigError, InvalidMessage
from secagg.messages import MaskedInput
from secagg.quantize import QuantizedInput, dequantize
from secagg.quantize_torch import (
    DeviceQuantizedInput,
    dequantize_tensor,
    from_host,
    to_host,
)

__all__ = [
    "AnyQuantized",
    "DecodedSum",
    "DeviceMaskedInput",
    "MaskGroup",
    "Masker",
    "RingBackend",
    "ServerRing",
    "masked_input_bytes",
    "resolve_backend",
]

AnyQuantized = QuantizedInput | DeviceQuantizedInput
#: One ``signed_mask_sum`` call's worth of masks: (keys, signs).
MaskGroup = tuple[Sequence[bytes], Sequence[int]]


class RingBackend(enum.Enum):
    """Where ring arithmetic runs (see the module docstring)."""

    NUMPY = "numpy"
    TORCH = "torch"


def resolve_backend(
    device: torch.device | str, backend: RingBackend | None
) -> RingBackend:
    """``backend`` as given, or by device: ``NUMPY`` on CPU, ``TORCH`` elsewhere."""
    if backend is None:
        cpu = torch.device(device).type == "cpu"
        return RingBackend.NUMPY if cpu else RingBackend.TORCH
    if not isinstance(backend, RingBackend):
        raise ConfigError(f"backend must be a RingBackend, got {backend!r}")
    return backend


@dataclass(frozen=True, slots=True, init=False)
class Masker:
    """A client's masking step on one device and back end."""

    device: torch.device
    backend: RingBackend

    def __init__(
        self, device: torch.device | str, backend: RingBackend | None = None
    ) -> None:
        dev = torch.device(device)
        object.__setattr__(self, "device", dev)
        object.__setattr__(self, "backend", resolve_backend(dev, backend))

    def message(
        self,
        sender: int,
        update: AnyQuantized,
        keys: Sequence[bytes],
        signs: Sequence[int],
    ) -> bytes:
        """The MaskedInput message: ``update + Σ signs·PRG(keys)`` on the wire."""
        return masked_input_bytes(
            sender, update, keys, signs, self.device, self.backend
        )


def masked_input_bytes(
    sender: int,
    update: AnyQuantized,
    keys: Sequence[bytes],
    signs: Sequence[int],
    device: torch.device,
    backend: RingBackend,
) -> bytes:
    """The MaskedInput message: ``update + Σ signs·PRG(keys)`` on the wire."""
    bits = update.bits
    if backend is RingBackend.NUMPY:
        host = update if isinstance(update, QuantizedInput) else to_host(update)
        host_masked = prg.apply_masks(host.values, keys, signs, bits, device)
        return MaskedInput(sender=sender, bits=bits, values=host_masked).to_bytes()
    if isinstance(update, DeviceQuantizedInput):
        values = update.values.to(device)  # a no-op when already there
    else:
        values = from_host(update, device).values
    length = values.shape[0]
    masks = prg_torch.signed_mask_sum(keys, signs, length, bits, values.device)
    masked = ring.reduce_t(masks.add_(values), bits)
    # The one device-to-host copy: the wire payload of the masked vector.
    payload = ring.to_wire_t(masked, bits)
    return b"".join((MaskedInput.frame(sender, bits, length), payload))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DeviceMaskedInput:
    """A parsed MaskedInput whose values are an int64 tensor on the device."""

    sender: int
    bits: int
    values: torch.Tensor


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DecodedSum:
    """The unmasked sum: ring residues on the host, the decoded sum as a tensor."""

    ring_sum: ring.RingArray
    weighted_sum: torch.Tensor
    total_weight: int
    clipped: int


class ServerRing:
    """The server's running ring sum for one session, on one back end."""

    def __init__(
        self,
        config: SecAggConfig,
        device: torch.device | str,
        backend: RingBackend | None = None,
        chunk_elems: int | None = None,
    ) -> None:
        self._config = config
        self._device = torch.device(device)
        self.backend = resolve_backend(self._device, backend)
        self._chunk = chunk_elems
        length, bits = config.encoded_length, config.ring_bits
        if self.backend is RingBackend.NUMPY:
            self._host = ring.zeros(length, bits)
        else:
            self._dev = torch.zeros(length, dtype=torch.int64, device=self._device)

    def parse(self, data: bytes) -> MaskedInput | DeviceMaskedInput:
        """Decode a MaskedInput message, onto the device for ``TORCH``."""
        if self.backend is RingBackend.NUMPY:
            return MaskedInput.from_bytes(data)
        sender, bits, length, payload = MaskedInput.parse_frame(data)
        try:
            values = ring.from_wire_t(payload, length, bits, self._device)
        except ValueError as exc:
            raise InvalidMessage("ring vector is malformed") from exc
        return DeviceMaskedInput(sender=sender, bits=bits, values=values)

    def snapshot(self) -> list[int]:
        """The running (masked) sum's residues, for state checks in tests."""
        if self.backend is RingBackend.NUMPY:
            return [
                int(v) for v in ring.reduce(self._host.copy(), self._config.ring_bits)
            ]
        return [int(v) for v in self._dev.tolist()]

    def add(self, values: ring.RingArray | torch.Tensor) -> None:
        """Fold one validated masked vector into the running sum."""
        if isinstance(values, np.ndarray):
            # Container arithmetic wraps mod 2^32 / 2^64; reduced at the end.
            np.add(self._host, values, out=self._host)
        else:
            ring.reduce_t(self._dev.add_(values), self._config.ring_bits)

    def unmask(self, groups: Sequence[MaskGroup]) -> DecodedSum:
        """Add every group's signed masks to the sum and decode it.

        ``NUMPY`` runs all keys in one pass over cache-sized blocks (as fast
        as the CPU path has been); ``TORCH`` makes one ``signed_mask_sum``
        call per group into a reused scratch tensor, in ``chunk_elems``
        batches of (key, element) pairs.
        """
        cfg = self._config
        if self.backend is RingBackend.NUMPY:
            keys = [k for g in groups for k in g[0]]
            signs = [s for g in groups for s in g[1]]
            total = prg.apply_masks(
                self._host, keys, signs, cfg.ring_bits, self._device
            )
            decoded = dequantize(total, cfg)
            return DecodedSum(
                ring_sum=total,
                weighted_sum=torch.from_numpy(decoded.weighted_sum),
                total_weight=decoded.total_weight,
                clipped=decoded.clipped,
            )
        acc = self._dev.clone()
        scratch = torch.empty_like(acc)
        for keys_g, signs_g in groups:
            if not keys_g:
                continue
            prg_torch.signed_mask_sum(
                keys_g, signs_g, acc.shape[0], cfg.ring_bits, acc.device,
                out=scratch, chunk_elems=self._chunk,
            )  # fmt: skip
            ring.reduce_t(acc.add_(scratch), cfg.ring_bits)
        out = dequantize_tensor(acc, cfg)
        # The residues are reported on the host (the aggregate's public
        # result); the decoded sum stays on the device.
        host = ring.from_int64(acc.to("cpu").numpy(), cfg.ring_bits)
        return DecodedSum(
            ring_sum=host,
            weighted_sum=out.weighted_sum,
            total_weight=out.total_weight,
            clipped=out.clipped,
        )
