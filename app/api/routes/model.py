"""`/model`: the served version's metadata, the loaded versions and the routing, and its plots."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from app.api.deps import StateDep
from app.api.errors import ApiError
from app.api.responses import policy_of
from app.api.schemas import LoadedVersion, ModelInfo, ShadowReport
from app.serving.state import ServiceState
from model_store.store import ModelStoreError

router = APIRouter(prefix="/model", tags=["model"])

PlotName = Literal["learning_curves", "confusion_matrix", "reliability_diagram", "robustness"]


EXAMPLE = {
    "metadata": {
        "name": "mnist",
        "version": 3,
        "created_at": "2026-11-26T00:11:35Z",
        "input": {
            "shape": [28, 28, 1],
            "dtype": "float32",
            "polarity": "light_on_dark",
            "scale": 0.00392156862745098,
        },
        "evaluation": {
            "accuracy": 0.996,
            "correct": 9960,
            "total": 10000,
            "per_class_accuracy": [0.998, 0.998, 0.997, 0.997, 0.996, 0.994, 0.994, 0.995, 0.996, 0.991],
        },
        "training": {
            "preset": "cnn",
            "hyperparameters": {"epochs": 18, "batch_size": 128},
            "train_seconds": 649.0,
        },
        "library_versions": {"keras": "3.15.1", "tensorflow": "2.21.0"},
        "files": {"model": "model.keras", "learning_curves": "learning_curves.png"},
    },
    "plots": {
        "learning_curves": "/model/plots/learning_curves",
        "confusion_matrix": "/model/plots/confusion_matrix",
    },
    "policy": {"source": "newest", "version": 3, "pinned_by": None, "pinned_at": None},
}


def loaded_versions(state: ServiceState) -> list[LoadedVersion]:
    default = state.holder.current.version
    details = state.manager.details
    return [
        LoadedVersion(
            version=version,
            default=version == default,
            weight_bytes=details[version].weight_bytes if version in details else 0,
            warmup_seconds=details[version].warmup_seconds if version in details else 0.0,
            runtime=serving.runtime,
            precision=serving.precision,
        )
        for version, serving in sorted(state.holder.loaded.items())
    ]


def shadow_reports(state: ServiceState) -> list[ShadowReport]:
    def mean_ms(seconds: float, count: int) -> float | None:
        return round(seconds / count * 1000, 3) if count else None

    return [
        ShadowReport(
            candidate=candidate,
            requests=stats.requests,
            images=stats.images,
            agreement=stats.agreeing / stats.images if stats.images else None,
            skipped=stats.skipped,
            default_mean_ms=mean_ms(stats.default_seconds, stats.requests),
            shadow_mean_ms=mean_ms(stats.shadow_seconds, stats.requests),
        )
        for candidate, stats in sorted(state.router.shadow_stats.items())
    ]


@router.get(
    "", response_model=ModelInfo, responses={200: {"content": {"application/json": {"example": EXAMPLE}}}}
)
async def model_info(state: StateDep) -> ModelInfo:
    """Metadata of the version being served: preset, hyperparameters, test scores, history."""
    metadata = state.holder.current.loaded.metadata
    plots = {role: f"/model/plots/{role}" for role in get_args(PlotName)}
    try:
        policy = policy_of(await state.manager.policy())
    except ModelStoreError:
        policy = None
    return ModelInfo(
        metadata=metadata,
        plots={k: v for k, v in plots.items() if k in metadata.files},
        policy=policy,
        loaded=loaded_versions(state),
        routing=state.manager.routing,
        shadow=shadow_reports(state),
    )


@router.get(
    "/plots/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such plot"}},
)
def model_plot(
    name: Annotated[PlotName, Path(description="which plot", examples=["learning_curves"])], state: StateDep
) -> FileResponse:
    """A PNG plot saved with the served version: learning curves, confusion matrix, reliability
    diagram or robustness."""
    loaded = state.holder.current.loaded
    file_name = loaded.metadata.files.get(name)
    if file_name is None or not (loaded.path / file_name).is_file():
        raise ApiError(404, f"version {loaded.version} has no {name} plot")
    return FileResponse(loaded.path / file_name, media_type="image/png")
