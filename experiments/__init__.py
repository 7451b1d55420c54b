"""The experiment harness: one package per task (data, model, evaluate, run) and the shared
run scaffold. Call :func:`register_configs` before Hydra composes ``conf/``."""


def register_configs() -> None:
    """What ``conf/`` needs before Hydra composes it: the ``optim`` group (every preset and
    peer) and the ``${run_variant:}`` resolver. Imported lazily, so readers of records can
    import this package without hydra or omegaconf."""
    from experiments.folders import register_resolvers
    from experiments.optimizers import register_optimizers

    register_optimizers()
    register_resolvers()
