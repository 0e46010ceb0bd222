"""The fedshield Flower app: thin entry points into ``core.flower``."""
