"""The Ray simulation engine: server and client worker actors, pools, the round protocol.

``client`` (what a virtual client computes) and ``server`` (what happens in a round) are plain
Python; ``worker``, ``pool`` and ``federation`` put them on Ray actors.
"""
