"""The gRPC server settings and service names every serving process (replica or router) shares."""

from __future__ import annotations

from trimtab.v1 import admin_pb2, inference_pb2

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
SERVICE_NAMES = (INFERENCE_SERVICE.full_name, ADMIN_SERVICE.full_name)

GRPC_OPTIONS = [
    # Refuse to share the port with another server: two replicas on one port would split traffic silently.
    ("grpc.so_reuseport", 0),
    # Prompts are capped at serving.max_prompt_chars; 1 MiB bounds what a client can make us buffer.
    ("grpc.max_receive_message_length", 1 << 20),
    # Detect dead clients on long streams so their requests are aborted inside the engine.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]
