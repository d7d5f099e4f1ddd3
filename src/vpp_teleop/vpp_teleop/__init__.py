"""Apple Vision Pro teleoperation of the XArm + XHand (and Panda) and demonstration recording."""
