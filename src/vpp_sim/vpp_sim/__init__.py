"""The simulation proof: language-conditioned tabletop tasks, scripted expert, recording and
closed-loop evaluation through the real node graph (franky-sim + MuJoCo)."""
