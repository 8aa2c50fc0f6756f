"""One config section and one builder for every halting scheme of :mod:`engramlab.ponder.halting`.

An experiment maps each of its arms to a method (``"pondernet"``, ``"act"``, ``"reinforce"``,
``"fixed"``), holds one ``model.halting: HaltingConfig`` section with its own defaults, and wraps
its step module with ``build_halting(method, step, cfg.model.halting)``. Every concept has one
name in every experiment: the step limit is ``max_steps`` (MEMO's hops are steps), the depth of
the fixed baseline ``fixed_steps``. A method reads only its own fields; the others wait for the
arms that use them.
"""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field
from torch import nn

from engramlab.config import Config
from engramlab.ponder.halting import ACT, FixedDepth, KLDirection, PonderNet, Reinforce
from engramlab.ponder.steps import Step

HaltingMethod = Literal["pondernet", "act", "reinforce", "fixed"]


class HaltingConfig(Config):
    """How long a step module ponders: the fields of every halting method, named once for all experiments."""

    max_steps: int = Field(
        20, ge=1, le=1000, description="N, the most steps in training and evaluation (PonderNet §2.3, App. B: 20)"
    )
    eval_max_steps: int | None = Field(
        None, ge=1, le=1000, description="N at evaluation (null: max_steps); larger lets a model think longer (§2.5)"
    )
    lambda_p: float = Field(
        0.2, gt=0, lt=1, description="PonderNet: λ_p of the geometric prior p_G (eq. 3); 1/λ_p = prior mean steps"
    )
    beta: float = Field(0.01, ge=0, description="PonderNet: β, weight of KL(p ‖ p_G) in the loss (eq. 3; paper: 0.01)")
    epsilon: float = Field(
        0.05, ge=0, lt=1, description="PonderNet: the training unroll stops once P(halted) > 1 - ε (§2.3; paper: 0.05)"
    )
    kl: KLDirection = Field(
        "paper",
        description="PonderNet: the regulariser KL(p ‖ p_G) of eq. 3 ('paper') or KL(p_G ‖ p) ('reverse', "
        "as two public implementations compute it; a deviation)",
    )
    tau: float = Field(0.01, ge=0, description="ACT: τ, weight of the ponder cost N + R (Graves 2016 eqs. 9-12)")
    act_epsilon: float = Field(
        0.01, gt=0, lt=1, description="ACT: a sample halts once Σ h_n ≥ 1 - ε (Graves 2016 eqs. 3-6; paper: 0.01)"
    )
    hop_cost: float = Field(
        0.0, ge=0, description="REINFORCE: reward lost per step, R = -L - hop_cost · N (MEMO §2.2, our reward)"
    )
    fixed_steps: int = Field(1, ge=1, le=1000, description="fixed: steps of the fixed-depth arm (1: no pondering)")


def build_halting(method: HaltingMethod, step: Step, config: HaltingConfig) -> nn.Module:
    """``step`` wrapped by the halting scheme ``method``, with the fields of ``config`` it reads."""
    c = config
    if method == "pondernet":
        return PonderNet(step, c.max_steps, c.lambda_p, c.beta, c.epsilon, c.kl)
    if method == "act":
        return ACT(step, c.max_steps, c.tau, c.act_epsilon)
    if method == "reinforce":
        return Reinforce(step, c.max_steps, c.hop_cost)
    if method == "fixed":
        return FixedDepth(step, c.fixed_steps)
    allowed = ", ".join(repr(m) for m in typing.get_args(HaltingMethod))
    raise ValueError(f"unknown halting method {method!r} (allowed: {allowed})")


def halting_renames(*moved: str, **renamed: str) -> dict[str, str]:
    """``Experiment.renamed_keys`` of an experiment whose runs were written before ``model.halting``
    existed: each key in ``moved`` went from ``model.<key>`` to ``model.halting.<key>``, each
    ``old=new`` in ``renamed`` from ``model.<old>`` to ``model.halting.<new>``."""
    names = {key: key for key in moved} | renamed
    return {f"model.{old}": f"model.halting.{new}" for old, new in names.items()}
