"""Demonstration data: ROS types without ROS, rosbag2 reading, time alignment, the on-disk dataset.

Nothing in this package imports rclpy; bags are read and written with ``rosbags``.

- :mod:`.ros_types`: a ``rosbags`` typestore with the project's ``vpp_msgs`` registered.
- :mod:`.dataset`: the dataset format (``DatasetWriter``, ``VPPDataset``).
- :mod:`.bag_reader`, :mod:`.sync`, :mod:`.convert`: ``ros2 bag record`` output -> dataset.
- :mod:`.synthetic`: realistic synthetic demonstration bags for tests and benchmarks.
"""
