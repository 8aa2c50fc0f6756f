"""Offline RL: learning to act better than the data (AlphaStar Unplugged at CPU scale)."""
