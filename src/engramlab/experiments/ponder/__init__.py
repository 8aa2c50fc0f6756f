"""Adaptive computation: PonderNet, ACT and fixed-depth baselines on parity (``pondernet_parity``),
and MEMO with PonderNet or REINFORCE halting on paired associative inference (``memo_pai``)."""
