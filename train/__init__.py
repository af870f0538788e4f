"""Training for JOINT / JOINT++: rated data sets, content-disjoint splits, losses, metrics, the
training loop and the recipes that reproduce the AGIN paper's experiments.

``train`` imports :mod:`joint_core`; ``joint_core`` never imports ``train``.
"""
