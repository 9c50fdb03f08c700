"""The model registry: immutable version directories with manifests, and serving pointers in Redis."""

from trimtab.registry.manifest import FEEDBACK_IDS, Manifest, OffsetRange
from trimtab.registry.pointers import PointerError, Pointers, PointerStore
from trimtab.registry.store import VERSION_PREFIX, Registry, RegistryError, detect_kind

__all__ = [
    "FEEDBACK_IDS",
    "VERSION_PREFIX",
    "Manifest",
    "OffsetRange",
    "PointerError",
    "PointerStore",
    "Pointers",
    "Registry",
    "RegistryError",
    "detect_kind",
]
