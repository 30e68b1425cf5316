"""Writes `descriptor.py` from `open_inference.proto` (needs grpcio-tools, in the test extra):

    python -m app.grpc.open_inference.generate

tests/app/grpc/test_descriptor.py fails while the checked-in module does not match the proto.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "open_inference.proto"
TARGET = HERE / "descriptor.py"


def compiled_descriptor() -> bytes:
    """The proto compiled to a serialized FileDescriptorProto, without source comments."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "set.binpb"
        # A process of its own: protoc inside a process that has loaded other native protobuf users
        # (the test suite's) can crash it.
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--descriptor_set_out={out}"]
        status = subprocess.run([*command, str(HERE / PROTO)], check=False).returncode
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (status {status})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return bytes(files[0].SerializeToString(deterministic=True))


def module_text(serialized: bytes) -> str:
    text = base64.b64encode(serialized).decode()
    body = "\n".join(f'    "{text[i : i + 96]}"' for i in range(0, len(text), 96))
    return (
        '"""open_inference.proto compiled to a FileDescriptorProto, base64-encoded: written by\n'
        '`python -m app.grpc.open_inference.generate`; do not edit."""\n\n'
        "import base64\n\n"
        f"FILE_DESCRIPTOR = base64.b64decode(\n{body}\n)\n"
    )


def main() -> int:
    TARGET.write_text(module_text(compiled_descriptor()))
    sys.stdout.write(f"wrote {TARGET.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
