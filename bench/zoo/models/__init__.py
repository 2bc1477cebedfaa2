"""One module per zoo model, each with ``build(cache_dir) -> dict`` (the arguments of ``sweeper.experiment``)."""
