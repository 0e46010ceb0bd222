"""The core tests' one fixture: ``kit`` (see `tests.core.kit`)."""

from __future__ import annotations

import pytest

from tests.core.kit import Kit


@pytest.fixture
def kit() -> Kit:
    """Synthetic clients, models, a federation builder and fake plug-ins."""
    return Kit()
