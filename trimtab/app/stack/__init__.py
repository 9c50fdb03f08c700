"""The local stack: a Kafka-protocol broker and Redis, started on demand (`trimtab up`)."""

from trimtab.app.stack.local import ServiceState, down, status, up
from trimtab.app.stack.services import StackError

__all__ = ["ServiceState", "StackError", "down", "status", "up"]
