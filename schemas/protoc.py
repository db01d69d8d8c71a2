"""Running grpcio-tools' protoc (the project's build step for ``.proto`` files): Python stubs for
the gRPC views service, and descriptor sets for Protobuf sources.

protoc runs as a subprocess so that its error (``click.proto:7:3: "strin" is not defined.``)
can be reported as the one line it is; the well-known types (``google/protobuf/*.proto``) come
from grpcio-tools' own include folder.
"""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import tempfile
from pathlib import Path


class ProtocError(ValueError):
    """protoc refused a .proto file; the message is protoc's first error line."""


def include_dir() -> Path:
    return Path(str(importlib.resources.files("grpc_tools") / "_proto"))


def run_protoc(proto: Path, *outputs: str, includes: tuple[Path, ...] = ()) -> None:
    """``protoc -I<proto's folder> -I<includes> -I<well-known types> <outputs> proto``."""
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}",
            *(f"-I{p}" for p in includes), f"-I{include_dir()}", *outputs, str(proto)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ProtocError(lines[0] if lines else f"protoc failed on {proto} (exit {done.returncode})")


def descriptor_set(proto: Path, includes: tuple[Path, ...] = (), extra: tuple[str, ...] = ()) -> bytes:
    """The serialized ``FileDescriptorSet`` of ``proto`` and everything it imports (``extra``:
    more protoc arguments, e.g. ``--descriptor_set_in`` for imports given as descriptors)."""
    with tempfile.TemporaryDirectory(prefix="headrace-protoc-") as tmp:
        out = Path(tmp) / "set.pb"
        run_protoc(proto, f"--descriptor_set_out={out}", "--include_imports", *extra, includes=includes)
        return out.read_bytes()
