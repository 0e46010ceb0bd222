"""The ``serverapp`` component: fedshield's coordinator (``core.flower``)."""

from __future__ import annotations

from core.flower.server_app import app

__all__ = ["app"]
