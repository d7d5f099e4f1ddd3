"""vpp_ros."""
