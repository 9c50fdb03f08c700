"""The config of a short `trimtab demo` inside the test run: the session's serving process (no second
vLLM engine for serving), its broker, Redis prefix and registry, and a harness that starts only what
the test asks for."""

from __future__ import annotations

from pathlib import Path

from tests.serving_process import ServingProcess
from trimtab.config import TrimtabConfig, load_config


def short_demo_config(serving: ServingProcess, run_dir: Path, **environ: str) -> TrimtabConfig:
    """The shared settings plus `environ` (TRIMTAB_* variables), which win."""
    served = serving.config
    return load_config(
        environ={
            "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": served.kafka.bootstrap_servers,
            "TRIMTAB_REDIS__URL": served.redis.url,
            "TRIMTAB_REDIS__KEY_PREFIX": served.redis.key_prefix,
            "TRIMTAB_REGISTRY__ROOT": str(served.registry.root),
            "TRIMTAB_MODEL__PATH": str(served.model.path),
            "TRIMTAB_FEEDBACK__GRPC_PORT": "0",
            "TRIMTAB_FEEDBACK__HTTP_PORT": "0",
            "TRIMTAB_DEMO__OUTPUT_DIR": str(run_dir),
            "TRIMTAB_DEMO__SERVING_ADDRESS": serving.address,
            "TRIMTAB_DEMO__ISOLATE_RUN": "false",
            "TRIMTAB_DEMO__EVAL_PROMPTS": "0",
            "TRIMTAB_DEMO__USERS__RATE": "2",
            "TRIMTAB_DEMO__USERS__CONCURRENCY": "4",
        }
        | environ
    )
