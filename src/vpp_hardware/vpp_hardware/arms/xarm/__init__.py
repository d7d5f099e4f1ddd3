"""UFACTORY xArm: SDK driver, kinematics and a loopback controller peer."""
