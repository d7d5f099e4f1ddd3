"""VPP model: TVP predictive features, Video Former, diffusion action head."""
