"""The README's tour: ask the served model four questions through the generated gRPC stubs, and with
--feedback give each answer a thumb and a correction through the feedback service's HTTP/JSON API.

    python docs/tour/ask.py               # ask; print each answer's version and text
    python docs/tour/ask.py --feedback    # ask, then judge every answer

Each question is asked by a different user: feedback is accepted only from the user who was served, and
the online learner takes at most `learner.online.round.max_user_share` of a round from one user.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import grpc

from trimtab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

SERVING = "127.0.0.1:50051"  # serving.host:serving.port
FEEDBACK = "http://127.0.0.1:8052/v1/feedback"  # feedback.http_port
# question -> (a word a right answer contains, the answer a user would write instead)
QUESTIONS = {
    "What is the capital of France?": ("Paris", "The capital of France is Paris."),
    "How many legs does a spider have?": ("eight", "A spider has eight legs."),
    "What colour is a ripe banana?": ("yellow", "A ripe banana is yellow."),
    "Which planet is closest to the Sun?": ("Mercury", "Mercury is the planet closest to the Sun."),
}


def submit(body: dict[str, object]) -> dict[str, object]:
    """POST one SubmitRequest (protobuf's JSON mapping); retried with the same feedback_id, so never twice."""
    request = urllib.request.Request(FEEDBACK, json.dumps(body).encode(), {"content-type": "application/json"})
    for _ in range(60):
        try:
            with urllib.request.urlopen(request) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as error:
            # 404: serving writes the response record just after its reply; 503: not ready yet or busy.
            if error.code not in (404, 503):
                raise SystemExit(f"feedback refused: {error.code} {error.read().decode()}") from None
        except urllib.error.URLError:
            pass  # the feedback service is still starting
        time.sleep(1.0)
    raise SystemExit("the feedback service did not accept the feedback within a minute")


def main() -> None:
    channel = grpc.insecure_channel(SERVING)
    grpc.channel_ready_future(channel).result(timeout=600)  # serving binds once its engine is up
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for i, (question, (keyword, better)) in enumerate(QUESTIONS.items()):
        user = f"tour-user-{i}"
        chat = common_pb2.Chat(messages=[common_pb2.ChatMessage(role="user", content=question)])
        reply = stub.Generate(
            inference_pb2.GenerateRequest(
                user_id=user,
                prompt=common_pb2.Prompt(chat=chat),
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=48),
            )
        )
        answer = reply.candidates[0]
        print(f"{answer.model_version}  {question}  ->  {answer.text!r}")
        if "--feedback" not in sys.argv:
            continue
        thumb = "THUMB_UP" if keyword.lower() in answer.text.lower() else "THUMB_DOWN"
        for label in ({"thumb": thumb}, {"correction": better}):
            body = {"feedback_id": str(uuid.uuid4()), "user_id": user, "response_id": answer.response_id}
            accepted = submit({**body, "label": label})
            print(f"    {next(iter(label))}: accepted at offset {accepted['offset']} of {accepted['topic']}")


if __name__ == "__main__":
    main()
