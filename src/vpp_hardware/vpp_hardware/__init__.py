"""vpp_hardware."""
