"""Franka Panda / FR3 over libfranka via ``franky`` (``franky-control`` on PyPI).

The simulated Franka is the same driver pointed at a franky-sim server
(:mod:`vpp_hardware.arms.franka.sim_server`). Import :mod:`.franky_arm` explicitly; it needs
``franky`` installed.
"""
