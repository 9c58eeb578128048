"""The simulation engine: the server, the virtual clients, pools of workers, devices.

Plain Python (one process runs them as the reference): ``client`` (a runtime serving
virtual clients), ``server`` (the global state and a round), ``pruning_phase``,
``round_tally`` (what became of each sampled client, the virtual clock), ``devices``
(profiles, availability, the memory gate), ``evaluation`` (the global model on validation
and test), ``messages`` (what travels), ``pool`` (the pool protocol and its round report),
``in_process`` (the in-process pool and the reference run), ``checkpoint``, ``allocator``
(worker processes keep the memory they free). On Ray, in ``ray/``: ``worker`` (a worker
actor's body), ``ray_pool`` (a round over worker actors, surviving their loss),
``federation`` (the actors of one run and its round loop), ``placement``, ``ray_session``
(joining or starting Ray).
See ``docs/ARCHITECTURE.md``.
"""
