"""Two versions in a real uvicorn with two workers: the official Triton client picks each one."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from model_store.mnist_data import MnistSplit
from tests.support.live_server import service_env, uvicorn_server

pytestmark = pytest.mark.e2e


def test_tritonclient_calls_a_specific_version(
    two_versions: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    env = service_env(two_versions, mnist_dir, loaded_versions="1,2")
    with uvicorn_server(env, tmp_path / "server.log", workers=2) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.is_model_ready("mnist", "1") and client.is_model_ready("mnist", "2")
        assert not client.is_model_ready("mnist", "3")
        images = test_split.images[[128, 3, 17]]
        tensor = triton.InferInput("images", [3, 784], "UINT8")
        tensor.set_data_from_numpy(images.reshape(3, 784))
        answers = {}
        for version in ("1", "2"):
            result = client.infer("mnist", [tensor], model_version=version)
            assert result.get_response()["model_version"] == version
            answers[version] = result.as_numpy("probabilities")
            # The same version through our own route gives the same probabilities.
            ours = httpx.get(f"{server.url}/test/128", params={"version": version}).json()
            np.testing.assert_allclose(ours["probabilities"], answers[version][0], atol=1e-6)
        assert np.abs(np.log(answers["1"] + 1e-12) - np.log(answers["2"] + 1e-12)).max() > 0.1
        assert (answers["1"].argmax(axis=1) == test_split.labels[[128, 3, 17]]).all()
        client.close()
