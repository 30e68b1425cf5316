"""What the calls return or raise, whichever transport carried them."""

from __future__ import annotations

from dataclasses import dataclass


class MnistServeError(Exception):
    """An error answer. `status` is the HTTP status, or over gRPC the HTTP status its code stands
    for (RESOURCE_EXHAUSTED 429, UNAUTHENTICATED 401, ...), with the code's name in `grpc_code`."""

    def __init__(self, status: int, detail: str, grpc_code: str | None = None) -> None:
        super().__init__(f"{grpc_code or status}: {detail}")
        self.status = status
        self.detail = detail
        self.grpc_code = grpc_code


class UnreachableError(ConnectionError):
    """No gRPC answer at all: nothing listens at the address, or the connection broke."""


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    model_version: int
    verdict: str | None = None  # present on servers that judge their answers
    source: str | None = None  # the file name, for batches of files
    prediction_id: str | None = None  # names the answer for `Client.feedback`; None from older servers


@dataclass(frozen=True)
class TestSample:
    index: int
    label: int
    prediction: Prediction

    @property
    def correct(self) -> bool:
        return self.label == self.prediction.digit
