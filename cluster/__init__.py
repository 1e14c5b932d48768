"""Scale-out on Ray: one front end (the server, the durable prompt store), many worker actors.

Ray is optional (``pip install -e .[ray]`` / ``requirements-ray.txt``); nothing here imports it except
:mod:`cluster.ray_pool`, and only when a cluster is started. The pieces, each with one job:

- :mod:`cluster.needs` — which model files and LoRA set a prompt needs (pure, from the API prompt);
- :mod:`cluster.routing` — the routing policies, pure functions from (pending prompts, workers) to
  assignments (residency-aware, round-robin, least-loaded);
- :mod:`cluster.scheduler` — the dispatcher's state machine (workers, residency, switches), no
  threads and no clock of its own, so the benchmark's simulation drives exactly this code;
- :mod:`cluster.dispatcher` — the front end's driver: claims prompts from the PromptStore for the
  worker routing chose, streams the worker's events to the EventBus, writes the output files it
  ships, heartbeats and finishes the claim, re-queues a prompt whose worker died;
- :mod:`cluster.outputs` — files shipped from a worker written atomically under their final names;
- :mod:`cluster.pool` — the narrow interface a worker pool offers (submit, interrupt, free, workers);
- :mod:`cluster.ray_pool` — that interface on Ray actors (the only module that imports ``ray``);
- :mod:`cluster.runtime` — what runs inside a worker actor: an Engine and its own node registry.
"""
