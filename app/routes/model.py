from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.deps import StateDep
from app.errors import ApiError
from app.schemas import ModelInfo

router = APIRouter(prefix="/model", tags=["model"])

PlotName = Literal["learning_curves", "confusion_matrix"]


@router.get("", response_model=ModelInfo)
async def model_info(state: StateDep) -> ModelInfo:
    """Metadata of the version being served: preset, hyperparameters, test scores, history."""
    metadata = state.holder.current.loaded.metadata
    plots = {role: f"/model/plots/{role}" for role in ("learning_curves", "confusion_matrix")}
    return ModelInfo(metadata=metadata, plots={k: v for k, v in plots.items() if k in metadata.files})


@router.get(
    "/plots/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such plot"}},
)
def model_plot(name: PlotName, state: StateDep) -> FileResponse:
    """A PNG plot saved with the served version: learning curves or the confusion matrix."""
    loaded = state.holder.current.loaded
    file_name = loaded.metadata.files.get(name)
    if file_name is None or not (loaded.path / file_name).is_file():
        raise ApiError(404, f"version {loaded.version} has no {name} plot")
    return FileResponse(loaded.path / file_name, media_type="image/png")
