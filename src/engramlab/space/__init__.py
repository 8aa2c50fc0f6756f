"""Space: trajectories, place and head-direction cells, and gridness scores (Banino et al. 2018)."""
