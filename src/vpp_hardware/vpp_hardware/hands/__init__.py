"""Dexterous hands: the :class:`~.hand.Hand` interface, the XHand vendor-SDK driver, the MuJoCo
simulated XHand, and the executor effector that streams hand joint targets."""
