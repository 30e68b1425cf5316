"""mnist-predict FILE...: classify digit images with a running mnist-serve, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mnist-predict", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PNG, JPEG, ... images of digits")
    parser.add_argument(
        "--url",
        default=os.environ.get("MNIST_SERVE_URL", "http://127.0.0.1:8000"),
        help="the service: http://host:port, or grpc://host:port for its gRPC port "
        "(default: $MNIST_SERVE_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--api-key", default=os.environ.get("MNIST_API_KEY"), help="default: $MNIST_API_KEY")
    parser.add_argument("--version", type=int, help="ask this loaded model version")
    parser.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    parser.add_argument(
        "--retries", type=int, default=3, help="retries after 503/429 or RESOURCE_EXHAUSTED (default 3)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(
            f"mnist-predict: no such file: {', '.join(missing)}; give paths of image files", file=sys.stderr
        )
        return 2
    import httpx

    from mnist_client.client import Client, MnistServeError, Prediction, UnreachableError

    rows: list[tuple[Path, Prediction | str]] = []
    try:
        client = Client(args.url, api_key=args.api_key, retries=args.retries)
    except ValueError as exc:
        print(f"mnist-predict: {exc} (--url)", file=sys.stderr)
        return 2
    try:
        with client:
            for path in args.files:
                try:
                    rows.append((path, client.predict(path, version=args.version)))
                except MnistServeError as exc:
                    rows.append((path, exc.detail))
    except (httpx.HTTPError, UnreachableError) as exc:
        print(
            f"mnist-predict: cannot reach {args.url} ({exc}); is mnist-serve running? (--url)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(
            json.dumps(
                [asdict(r) if not isinstance(r, str) else {"source": str(p), "error": r} for p, r in rows]
            )
        )
    else:
        width = max(len(str(path)) for path, _ in rows)
        print(f"{'file':<{width}}  digit  confidence  verdict   version")
        for path, result in rows:
            if isinstance(result, str):
                print(f"{path!s:<{width}}  error: {result}")
            else:
                verdict = result.verdict or "-"
                scores = (
                    f"{result.digit:>5}  {result.confidence:>10.4f}  {verdict:<8}  {result.model_version}"
                )
                print(f"{path!s:<{width}}  {scores}")
    return 1 if any(isinstance(r, str) for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
