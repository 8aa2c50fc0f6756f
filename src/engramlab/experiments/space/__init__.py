"""Memory for space: grid cells (Banino et al. 2018)."""
