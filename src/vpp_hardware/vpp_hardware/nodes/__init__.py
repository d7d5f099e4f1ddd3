"""ROS 2 nodes: thin adapters over the drivers and executor cores of this package."""
