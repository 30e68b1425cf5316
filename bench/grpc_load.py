"""gRPC ModelInfer against HTTP v2 (JSON and binary) and /predict, side by side on one server.

    python -m bench.grpc_load --store models --data-dir data/mnist --preset seed cnn

For each model version (the newest of each --preset, or --version, or the newest) it starts the
service once with both ports, checks that every protocol answers test digit 128 with an 8, then for
--rounds rounds (the order rotating) drives each protocol for --seconds or --calls calls, whichever
ends first: one digit per call at each --connections count in flight, then --batch digits per call
at each --batch-connections count:
  grpc       ModelInfer, one raw UINT8 tensor
  v2-json    POST /v2/models/<name>/infer, the pixels as JSON numbers
  v2-binary  the same with the binary tensor extension: raw bytes in, raw bytes out
  predict    POST /predict, a multipart PNG (a batch: POST /predict/batch, one .npy array)
gRPC is driven by grpc.aio, HTTP by two Python generators on the same event loop (asyncio streams
and httpx, `bench.async_load`) and by wrk, the other benchmarks' generator. Bodies are built once
and answers read as bytes, unparsed. Writes bench/results/grpc.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
from PIL import Image

from bench.async_load import GENERATORS, Generator, drive
from bench.grpc_report import Cell, render
from bench.report import RESULTS
from bench.run import versions_to_run
from bench.servers import Load, free_port, service_env, start_server, wrk
from model_store.mnist_data import load_split
from model_store.open_inference.messages import ModelInferRequest, ModelInferResponse, method_path
from model_store.reporting import one_line_errors
from model_store.store import ModelStore

PROG = "bench.grpc_load"
PROTOCOLS = ("grpc", "v2-json", "v2-binary", "predict")
HEADER_LENGTH = "Inference-Header-Content-Length"
DIGIT = 128  # test image 128, an 8: the digit every benchmark sends


@dataclass(frozen=True)
class Body:
    """One protocol's request for some images, built once: path, bytes and what wrk needs."""

    path: str
    data: bytes
    content_type: str = ""
    header: tuple[str, str] | None = None
    multipart_png: bool = False  # /predict: `data` is the PNG; it goes as multipart field `file`


def bodies(model: str, images: np.ndarray, png: bytes) -> dict[str, Body]:
    """Every protocol's request for `images` (N, 28, 28); `png` is the single digit's file."""
    count, raw = len(images), images.astype(np.uint8).tobytes()
    tensor = {"name": "images", "shape": [count, 784], "datatype": "UINT8"}
    request = ModelInferRequest(model_name=model)
    request.inputs.add(name="images", datatype="UINT8", shape=[count, 28, 28])
    request.raw_input_contents.append(raw)
    infer = f"/v2/models/{model}/infer"
    header = json.dumps(
        {
            "inputs": [tensor | {"parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    found = {
        "grpc": Body(method_path("ModelInfer"), request.SerializeToString()),
        "v2-json": Body(
            infer,
            json.dumps({"inputs": [tensor | {"data": images.reshape(-1).tolist()}]}).encode(),
            "application/json",
        ),
        "v2-binary": Body(infer, header + raw, "application/octet-stream", (HEADER_LENGTH, str(len(header)))),
    }
    if count == 1:
        found["predict"] = Body("/predict", png, multipart_png=True)
    else:
        npy = io.BytesIO()
        np.save(npy, images.astype(np.uint8))
        found["predict"] = Body("/predict/batch", npy.getvalue(), "application/x-npy")
    return found


def http_request(body: Body) -> tuple[bytes, dict[str, str]]:
    """The HTTP body and headers of `body` (a PNG wrapped as multipart field `file`)."""
    if not body.multipart_png:
        return body.data, {"content-type": body.content_type} | dict([body.header] if body.header else [])
    boundary = "benchboundary7d93"
    data = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + body.data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return data, {"content-type": f"multipart/form-data; boundary={boundary}"}


def sent_bytes(protocol: str, body: Body) -> int:
    """The request's payload: the gRPC message, or the HTTP body."""
    return len(body.data) if protocol == "grpc" else len(http_request(body)[0])


async def check_answers(http_url: str, grpc_target: str, cases: dict[int, dict[str, Body]]) -> None:
    """Every protocol answers 8 for test digit 128 (the first image of every case)."""
    async with (
        grpc.aio.insecure_channel(grpc_target) as channel,
        httpx.AsyncClient(base_url=http_url) as http,
    ):
        for images, found in cases.items():
            for protocol, body in found.items():
                if protocol == "grpc":
                    answer = ModelInferResponse.FromString(
                        await channel.unary_unary(body.path)(body.data, timeout=60)
                    )
                    outputs = [output.name for output in answer.outputs]
                    digit = int(np.frombuffer(answer.raw_output_contents[outputs.index("digit")], "<i8")[0])
                else:
                    data, headers = http_request(body)
                    response = await http.post(body.path, content=data, headers=headers, timeout=60)
                    response.raise_for_status()
                    digit = _http_digit(protocol, response)
                if digit != 8:
                    raise RuntimeError(f"{protocol} with {images} images answered {digit} for an 8")


def _http_digit(protocol: str, response: httpx.Response) -> int:
    if protocol == "predict":
        body = response.json()
        return int(body["prediction"] if "prediction" in body else body["predictions"][0])
    if protocol == "v2-json":
        outputs = {output["name"]: output for output in response.json()["outputs"]}
        return int(outputs["digit"]["data"][0])
    length = int(response.headers[HEADER_LENGTH])
    offset = length
    for output in json.loads(response.content[:length])["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "digit":
            return int(np.frombuffer(response.content[offset : offset + 8], "<i8")[0])
        offset += size
    raise RuntimeError("v2-binary answered without a digit")


def wrk_load(http_url: str, body: Body, connections: int, seconds: int, folder: Path) -> Load:
    path = folder / f"body-{abs(hash(body.data))}"
    path.write_bytes(body.data)
    url = f"{http_url}{body.path}"
    if body.multipart_png:
        return wrk(url, connections, seconds, path, "multipart")
    header = f"{body.header[0]}: {body.header[1]}" if body.header else ""
    return wrk(url, connections, seconds, path, "raw", body.content_type, header=header)


def measure_model(
    store: ModelStore, version: int, images: np.ndarray, png: bytes, args: argparse.Namespace
) -> tuple[str, list[Cell]]:
    """Start the service on `version` with gRPC and drive every cell for every round."""
    metadata = store.read_metadata(version)
    grpc_port = free_port()
    env = service_env(
        args.store, args.data_dir, MNIST_MODEL_VERSION=str(version), MNIST_GRPC_PORT=str(grpc_port)
    )
    cases = {1: bodies(metadata.name, images[:1], png)}
    cases[args.batch] = bodies(metadata.name, images[: args.batch], png)
    http_generators = [*GENERATORS["http"], *(["wrk"] if args.wrk else [])]
    cells = {
        (protocol, generator, connections, count): Cell(
            protocol, generator, connections, count, [], sent_bytes(protocol, cases[count][protocol])
        )
        for count in cases
        for connections in (args.connections if count == 1 else args.batch_connections)
        for protocol in PROTOCOLS
        for generator in (GENERATORS["grpc"] if protocol == "grpc" else http_generators)
    }
    folder = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    server = start_server("ours", args.workers, env, log_dir=folder)
    target = f"127.0.0.1:{grpc_port}"
    try:
        asyncio.run(check_answers(server.url, target, cases))
        for round_number in range(args.rounds):
            for key in _rotated(list(cells), round_number):
                protocol, generator, connections, count = key
                body = cases[count][protocol]
                if generator == "wrk":
                    load = wrk_load(server.url, body, connections, args.seconds, folder)
                else:
                    load = asyncio.run(python_load(generator, server.url, target, body, connections, args))
                cells[key].loads.append(load)
                print(f"{metadata.name} v{version} round {round_number + 1}: {describe(cells[key], load)}")
    finally:
        server.stop()
    title = f"{metadata.name} v{version} ({metadata.training.preset} preset)"
    return title, list(cells.values())


def _rotated(keys: list[tuple[str, str, int, int]], round_number: int) -> list[tuple[str, str, int, int]]:
    """Each round starts at another protocol, so no protocol always runs first or last."""
    shift = round_number % len(PROTOCOLS)
    order = {protocol: (i - shift) % len(PROTOCOLS) for i, protocol in enumerate(PROTOCOLS)}
    return sorted(keys, key=lambda key: (key[3], key[2], order[key[0]], key[1]))


async def python_load(
    kind: str, http_url: str, grpc_target: str, body: Body, connections: int, args: argparse.Namespace
) -> Load:
    """A warm-up, then the measured run, on connections made once for both (in this event loop)."""
    generator = Generator(kind, http_url, grpc_target, connections)
    data, headers = (body.data, {}) if generator.kind == "grpc.aio" else http_request(body)
    try:
        calls = generator.calls(connections, body.path, data, headers)
        await drive(calls, args.warmup, None)
        return await drive(calls, args.seconds, args.calls)
    finally:
        await generator.close()


def describe(cell: Cell, load: Load) -> str:
    return (
        f"{cell.protocol:9} {cell.generator:8} c={cell.connections:<3} n={cell.images:<3} "
        f"{load.requests_per_second:8,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"errors {load.errors}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST files (test digit 128)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version to serve (default: newest)")
    which.add_argument("--preset", nargs="+", help="the newest version of each preset, one after another")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64], help="calls in flight")
    parser.add_argument("--batch", type=int, default=128, help="digits per call in the batch rows")
    parser.add_argument(
        "--batch-connections",
        type=int,
        nargs="+",
        default=[1, 8],
        help="calls in flight in the batch rows (64 x 128 digits would pass the service's queue)",
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each run")
    parser.add_argument("--calls", type=int, help="end a run after this many calls, if sooner")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each Python run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="only the Python generators")
    parser.add_argument("--out", type=Path, default=RESULTS / "grpc.md")
    args = parser.parse_args(argv)
    numbers = {
        "--workers": [args.workers],
        "--connections": args.connections,
        "--batch-connections": args.batch_connections,
        "--seconds": [args.seconds],
        "--rounds": [args.rounds],
        "--calls": [] if args.calls is None else [args.calls],
        "--version": [] if args.version is None else [args.version],
    }
    for name, values in numbers.items():
        if values and min(values) < 1:
            parser.error(f"{name} must be at least 1")
    if not 2 <= args.batch <= 10_000:
        parser.error("--batch must be between 2 and 10000")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    for name in ("store", "data_dir"):
        if not getattr(args, name).is_dir():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such folder")
    if args.wrk and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk); --no-wrk runs without it")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with one_line_errors(PROG):
        store = ModelStore(args.store)
        versions = versions_to_run(store, args, PROG)
        test = load_split(args.data_dir, "test")
    images = test.images[DIGIT : DIGIT + args.batch]
    if len(images) < args.batch:  # near the end of the split: wrap around
        images = np.concatenate([images, test.images[: args.batch - len(images)]])
    png = io.BytesIO()
    Image.fromarray(test.images[DIGIT]).save(png, format="PNG")
    runs = [measure_model(store, version, images, png.getvalue(), args) for version in versions]
    text = render(runs, args, os.cpu_count() or 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
