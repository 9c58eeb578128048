"""The engine on Ray: the server and a pool of client workers as actors (``federation``,
``worker``, ``ray_pool``), each actor's share of the node (``placement``), and the Ray
instance a run joins or starts (``ray_session``). Everything above ``sim/`` that is not Ray
runs the same rounds in one process (``sim.in_process``), bit for bit."""
