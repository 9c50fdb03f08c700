"""Generate the Python gRPC/protobuf modules from the schema of record in ``proto/``.

The .proto files are the one schema for the gRPC wire and the Kafka topics; the Python modules
are derived from them, never edited, and not committed. ``proto/trimtab/v1/x.proto`` becomes
``<out_root>/trimtab/v1/x_pb2.py`` (plus ``x_pb2.pyi`` for type checkers and ``x_pb2_grpc.py``
for stubs and servicers), so generated imports read ``from trimtab.v1 import x_pb2``.

Run ``python -m trimtab.protogen`` (``make proto``) to regenerate into the repository.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class ProtocError(RuntimeError):
    """protoc rejected the schema; the message is protoc's own."""


def generated_files(directory: Path) -> list[Path]:
    """The generated modules in ``directory``, sorted (what a regeneration replaces)."""
    return sorted(p for p in directory.glob("*_pb2*.py*") if p.name.endswith(GENERATED_SUFFIXES))


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every ``.proto`` under ``proto_root`` into ``out_root``; return the files written.

    protoc runs in a subprocess so that its error text can be raised as ``ProtocError``. After a
    successful run, generated modules that no .proto produces any more are removed, so a deleted
    or renamed .proto leaves nothing stale behind (and a failed run leaves the old ones intact).
    """
    protos = sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise ProtocError(f"no .proto files under {proto_root}")
    out_root.mkdir(parents=True, exist_ok=True)
    well_known_types = resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known_types}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(proto.as_posix() for proto in protos),
    ]
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProtocError(result.stderr.strip() or f"protoc exited with {result.returncode}")
    if result.stderr:
        print(result.stderr, end="", file=sys.stderr)  # protoc's warnings, e.g. unused imports
    written = {out_root / proto.parent / f"{proto.stem}{suffix}" for proto in protos for suffix in GENERATED_SUFFIXES}
    for package_dir in {path.parent for path in written}:
        for stale in set(generated_files(package_dir)) - written:
            stale.unlink()
    return sorted(written)


def main() -> int:
    """Regenerate into the repository and list what was written; protoc's errors exit non-zero."""
    try:
        written = generate(REPO_ROOT)
    except ProtocError as error:
        print(f"protoc failed:\n{error}", file=sys.stderr)
        return 1
    for path in written:
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
