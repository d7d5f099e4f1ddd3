"""vpp_core."""
