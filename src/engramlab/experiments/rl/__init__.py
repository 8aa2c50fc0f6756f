"""Reinforcement learning: CoBERL on MinAtar."""
