"""Adaptive computation: step modules (``steps``), halting schemes around them (``halting``: PonderNet,
ACT, REINFORCE, fixed depth), and the one config section and builder that choose among them (``build``)."""

from engramlab.ponder.build import HaltingConfig, HaltingMethod, build_halting, halting_renames
from engramlab.ponder.halting import ACT, FixedDepth, PonderNet, Reinforce

__all__ = [
    "ACT",
    "FixedDepth",
    "HaltingConfig",
    "HaltingMethod",
    "PonderNet",
    "Reinforce",
    "build_halting",
    "halting_renames",
]
