"""nija_broker: per-account order state, performance and a pre-trade guard for the NIJA bot."""

from __future__ import annotations

__version__ = "0.1.0"
