"""VPP training: stage 1 (TVP fine-tuning), stage 2 (Video Former + action head), previews.

Commands: ``python -m vpp_core.training.stage1|stage2|preview``; configs in ``config/train/``.
Imports no ROS.
"""
