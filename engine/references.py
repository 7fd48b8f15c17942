"""'module:attribute' references: how the engine reaches code it must not import."""

import importlib
from typing import Any


def load_reference(reference: str, setting: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{setting}: {reference!r} is not 'module:attribute'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{setting}: cannot load {reference!r}: {error}") from None
