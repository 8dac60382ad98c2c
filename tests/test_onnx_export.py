"""model.onnx is what InsightFace expects: get_model routes it to ArcFaceONNX and get_feat matches torch."""

import os

import numpy as np
import pytest
import torch

from lrfr_plugins.engine.embed import make_embedder
from lrfr_plugins.export.onnx import export_onnx


@pytest.fixture
def backbone(registry):
    torch.manual_seed(0)
    model = registry.create("backbone", "tiny", embedding_size=64)
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def face_image(seed=0):
    from lrfr_plugins.synthetic import SyntheticFaceGenerator

    return SyntheticFaceGenerator(seed, "test").render(np.array([3]), np.array([seed]))[0]  # RGB HWC uint8


def test_export_shape_and_onnxruntime_parity(backbone, tmp_path):
    onnx = pytest.importorskip("onnx")
    report = export_onnx(backbone, tmp_path / "model.onnx")
    model = onnx.load(str(tmp_path / "model.onnx"))
    (inp,), (_out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 112, 112]
    assert report["outputs"] == 1
    if report["parity_max_abs_diff"] is not None:
        assert report["parity_max_abs_diff"] < 1e-3


@pytest.mark.insightface
def test_insightface_loads_it_as_arcface_and_embeddings_match(backbone, tmp_path):
    if os.environ.get("CI") == "true":  # CI installs insightface: there this test must run, never skip
        import insightface.model_zoo as model_zoo
    else:
        model_zoo = pytest.importorskip("insightface.model_zoo")
    export_onnx(backbone, tmp_path / "model.onnx")
    model = model_zoo.get_model(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert type(model).__name__ == "ArcFaceONNX"
    assert (model.input_mean, model.input_std) == (127.5, 127.5)  # it normalises; the graph must not
    rgb = face_image()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # InsightFace works on OpenCV BGR images
    onnx_feat = model.get_feat(bgr).ravel()
    embed = make_embedder(backbone, torch.device("cpu"))
    torch_feat = embed(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())[0]
    cosine = float(onnx_feat @ torch_feat / np.linalg.norm(onnx_feat) / np.linalg.norm(torch_feat))
    assert cosine >= 0.9999
    batch = model.get_feat([bgr, np.ascontiguousarray(face_image(1)[:, :, ::-1])])  # dynamic batch axis
    assert batch.shape == (2, 64)
