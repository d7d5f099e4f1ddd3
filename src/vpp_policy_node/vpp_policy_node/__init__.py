"""vpp_policy_node."""
