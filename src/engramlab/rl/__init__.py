"""Reinforcement learning: MinAtar games as batches of environments and PPO with a recurrent core."""
