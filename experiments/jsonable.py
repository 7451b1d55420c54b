"""Values as JSON takes them, for everything the harness writes (metrics rows, records, W&B).
Standard library only, like experiments.records, its reader-facing user."""


def plain(value):
    """``value`` with every tensor or numpy value (anything with ``tolist``) turned into Python
    numbers and lists, in dicts, lists and tuples at any depth: what JSON, W&B and the record
    validator take. Optimizers may keep ``lr`` as a 0-dim tensor (torchao's do)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    return value
