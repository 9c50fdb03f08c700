"""A FeedbackService that does no work: the gRPC transport alone, as the feedback service runs it.

`python -m bench.grpc_floor PORT EVENT_LOOP` serves Submit and SubmitBatch on 127.0.0.1:PORT with
grpc.aio on the same event loop as `python -m feedback` (`feedback.event_loop`), the same raw-bytes
handlers and the same standard health service, and answers every item accepted at once: no auth,
Redis, producer or spans. `bench.feedback` drives it with the real service's load, so its rows say how
far the transport alone gets on the machine: the ceiling the service's ratios are reached under.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from trimtab.v1 import feedback_pb2

SERVICE_NAME = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name


def _accepted(request: feedback_pb2.SubmitRequest) -> feedback_pb2.SubmitResponse:
    return feedback_pb2.SubmitResponse(feedback_id=request.feedback_id, topic="floor", partition=0, offset=0)


async def _submit(raw: bytes, context: grpc.aio.ServicerContext) -> feedback_pb2.SubmitResponse:
    return _accepted(feedback_pb2.SubmitRequest.FromString(raw))


async def _submit_batch(raw: bytes, context: grpc.aio.ServicerContext) -> feedback_pb2.SubmitBatchResponse:
    response = feedback_pb2.SubmitBatchResponse()
    for request in feedback_pb2.SubmitBatchRequest.FromString(raw).items:
        response.results.add(accepted=_accepted(request))
    return response


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handlers = {
        "Submit": grpc.unary_unary_rpc_method_handler(
            _submit, response_serializer=feedback_pb2.SubmitResponse.SerializeToString
        ),
        "SubmitBatch": grpc.unary_unary_rpc_method_handler(
            _submit_batch, response_serializer=feedback_pb2.SubmitBatchResponse.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)])
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit() or argv[1] not in ("asyncio", "uvloop"):
        print("usage: python -m bench.grpc_floor PORT asyncio|uvloop", file=sys.stderr)
        return 2
    loop_factory = uvloop.new_event_loop if argv[1] == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
