"""A model's parameters as one flat float tensor, and back.

`ParamSpec` records the name, shape, dtype and device of every floating-point
entry of a model's `state_dict` (parameters *and* float buffers such as
BatchNorm's running statistics), in state-dict order. `flatten` concatenates
them into one 1-D tensor; `unflatten` cuts that tensor back into a state dict
with the original shapes, dtypes and devices.

Integer and boolean buffers (BatchNorm's ``num_batches_tracked``) are *not*
federated: they are counters, averaging them is meaningless, and a float32
vector cannot hold an int64 exactly above 2^24. They are listed in
`ParamSpec.local_buffers`, checked for presence, and `load_into` leaves the
receiving model's values of them untouched.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
>>> spec = ParamSpec.from_module(model)
>>> spec.numel, spec.local_buffers
(16, ('1.num_batches_tracked',))
>>> torch.equal(spec.flatten(spec.unflatten(spec.flatten(model))), spec.flatten(model))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import Tensor, nn

from core.errors import ParamSpecError

__all__ = ["ParamEntry", "ParamSpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamEntry:
    """One floating-point state-dict entry: where it sits in the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    offset: int

    @property
    def numel(self) -> int:
        """Number of elements of this entry."""
        return prod(self.shape)

    def describe(self) -> str:
        """A device-independent description, used in fingerprints and messages."""
        return (
            f"{self.name}:{list(self.shape)}:{str(self.dtype).removeprefix('torch.')}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpec:
    """The layout of a model's floating-point state as one flat tensor.

    Build it with `ParamSpec.from_module` or `ParamSpec.from_state_dict`. The
    flat tensor has dtype `flat_dtype` (the promotion of all entry dtypes, so
    nothing loses precision) and lives on `flat_device` (the first entry's).
    """

    entries: tuple[ParamEntry, ...]
    local_buffers: tuple[str, ...]
    flat_dtype: torch.dtype
    flat_device: torch.device

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamSpec:
        """The spec of `module.state_dict()`."""
        return cls.from_state_dict(module.state_dict())

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> ParamSpec:
        """The spec of a state dict; refuses one without floating-point entries."""
        entries: list[ParamEntry] = []
        local: list[str] = []
        offset = 0
        for name, tensor in state.items():
            if not tensor.is_floating_point():
                local.append(name)
                continue
            entry = ParamEntry(
                name=name,
                shape=tuple(tensor.shape),
                dtype=tensor.dtype,
                device=tensor.device,
                offset=offset,
            )
            entries.append(entry)
            offset += entry.numel
        if not entries:
            raise ParamSpecError("the state dict has no floating-point entries")
        flat_dtype = entries[0].dtype
        for entry in entries[1:]:
            flat_dtype = torch.promote_types(flat_dtype, entry.dtype)
        return cls(
            entries=tuple(entries),
            local_buffers=tuple(local),
            flat_dtype=flat_dtype,
            flat_device=entries[0].device,
        )

    @property
    def numel(self) -> int:
        """Length of the flat vector."""
        last = self.entries[-1]
        return last.offset + last.numel

    def describe(self) -> list[str]:
        """One ``name:[shape]:dtype`` string per entry, then the local buffers."""
        return [e.describe() for e in self.entries] + [
            f"{name}:local" for name in self.local_buffers
        ]

    def difference(self, other: Sequence[str]) -> str:
        """Where the layout `other` (a saved `describe()`) departs from this one."""
        current = self.describe()
        for i, (old, new) in enumerate(zip(other, current, strict=False)):
            if old != new:
                return (
                    f"entry {i} is {old!r} in the checkpoint but {new!r} in this model"
                )
        return f"the checkpoint has {len(other)} entries, this model {len(current)}"

    def fingerprint(self) -> str:
        """SHA-256 of `describe()`: equal exactly when the layouts are equal."""
        return hashlib.sha256("\n".join(self.describe()).encode()).hexdigest()

    def zeros(self) -> Tensor:
        """A flat vector of zeros with this spec's dtype and device."""
        return torch.zeros(self.numel, dtype=self.flat_dtype, device=self.flat_device)

    def flatten(self, source: nn.Module | Mapping[str, Tensor]) -> Tensor:
        """Concatenate the floating-point entries of `source` into a new 1-D tensor.

        Raises `ParamSpecError` if a name is missing or extra, or a shape or
        dtype differs from the spec.
        """
        state = source.state_dict() if isinstance(source, nn.Module) else source
        self._check_names(state, with_local=False)
        parts: list[Tensor] = []
        for entry in self.entries:
            tensor = state[entry.name]
            _check_entry(entry, tensor, "found")
            parts.append(
                tensor.detach()
                .reshape(-1)
                .to(device=self.flat_device, dtype=self.flat_dtype)
            )
        return torch.cat(parts)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Cut `flat` into the floating-point entries, each a fresh tensor.

        Shapes, dtypes and devices are those of the spec. Local (integer)
        buffers are not in the result; see `load_into`.
        """
        self._check_flat(flat)
        return {
            e.name: flat[e.offset : e.offset + e.numel]
            .reshape(e.shape)
            .to(dtype=e.dtype, device=e.device, copy=True)
            for e in self.entries
        }

    def load_into(self, module: nn.Module, flat: Tensor) -> None:
        """Copy `flat` into `module`'s floating-point state, in place.

        The module's local (integer) buffers keep their values. The module's
        layout is checked against the spec first, so a failure changes nothing.
        """
        self._check_flat(flat)
        state = module.state_dict()
        self._check_names(state, with_local=True)
        for entry in self.entries:
            _check_entry(entry, state[entry.name], "the module has")
        with torch.no_grad():
            for entry in self.entries:
                chunk = flat[entry.offset : entry.offset + entry.numel]
                state[entry.name].copy_(chunk.reshape(entry.shape))

    def _check_flat(self, flat: Tensor) -> None:
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ParamSpecError(
                f"the flat vector must be 1-D with {self.numel} elements; "
                f"found shape {list(flat.shape)}"
            )

    def _check_names(self, state: Mapping[str, Tensor], *, with_local: bool) -> None:
        # A flat vector carries no local buffers, so a state dict made by
        # `unflatten` may lack them; a module's own state dict must have them.
        floats = {e.name for e in self.entries}
        required = floats | set(self.local_buffers) if with_local else floats
        missing = sorted(required - set(state))
        extra = sorted(set(state) - floats - set(self.local_buffers))
        if missing or extra:
            raise ParamSpecError(
                f"state dict entries must match the spec; missing {missing}, "
                f"unexpected {extra}"
            )


def _check_entry(entry: ParamEntry, tensor: Tensor, found: str) -> None:
    """Refuse a tensor whose shape or dtype is not the entry's."""
    if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
        raise ParamSpecError(
            f"{entry.name!r} must have shape {list(entry.shape)} and dtype "
            f"{entry.dtype}; {found} {list(tensor.shape)} and {tensor.dtype}"
        )
