"""The one error family of the Flower engines."""

from __future__ import annotations

from core.errors import ConfigError, FederationError

__all__ = ["AgentError", "DeploymentConfigError", "DeploymentError", "WireError"]


class DeploymentError(FederationError):
    """Base class of every error `core.flower` raises on purpose."""


class DeploymentConfigError(DeploymentError, ConfigError):
    """A run, node or engine setting is missing or out of range.

    The message names the setting (``table.key`` or the node-config key), what
    is accepted and what was found.
    """


class WireError(DeploymentError):
    """A Flower message does not have the exact shape this app sends.

    Raised for an unknown stage, a missing or extra field, or a field of the
    wrong type; nothing in such a message is acted upon.
    """


class AgentError(DeploymentError):
    """The institution's node agent refused a request or could not be reached."""
