"""QoS profiles used across the graph, named by what flows through them."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: Camera images and high-rate robot state: best effort, only the newest matters.
SENSOR_QOS: QoSProfile = qos_profile_sensor_data

#: Action chunks: reliable (a lost chunk stalls the robot until the next), keep only the newest:
#: an old chunk arriving late is worse than none.
CHUNK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)

#: Commands typed by people (`ros2 topic pub /task_language ...` uses reliable/volatile).
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)

#: Status topics: a late joiner (a dashboard, `ros2 topic echo`) gets the last status at once.
STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
