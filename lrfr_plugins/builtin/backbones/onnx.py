"""A pretrained ONNX recognizer as a trainable backbone: fine-tune what you already have, export it back.

``backbone: {name: onnx, params: {path: w600k_r50.onnx}}``. The file's graph becomes torch modules
(:mod:`lrfr_plugins.onnx_model.to_torch`), or, for arcface_torch's iresnet (what InsightFace's packs ship), our own
``iresnetXX`` with the file's tensors (:mod:`lrfr_plugins.builtin.backbones.iresnet_import`), whose state dict is an
arcface_torch ``backbone.pth``. Which one was used is ``imported_as`` ("iresnet" or "graph").

The backbone takes the project's input (RGB, ``(x - 127.5) / 127.5``) and feeds the model what it wants, as
:func:`lrfr_plugins.onnx_model.feeding.read_feeding` reads it from the graph (or from ``input_mean``/``input_std``/
``bgr``): ``pixel = x * 127.5 + 127.5``, then ``(pixel - mean) / std``, channels flipped for BGR. That step is
skipped when the model wants exactly the project's input, so an exported iresnet has no extra nodes.

Construction compares the module with onnxruntime on a fixed batch of synthetic faces (``check_parity``): a
converter mistake is an error naming the file and the difference, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ...api import Backbone, param
from ...errors import LrfrError

#: Synthetic faces (seed, identities) the parity check renders: fixed, so the check is reproducible.
PARITY_SEED, PARITY_FACES = 0, 4


@dataclasses.dataclass(frozen=True)
class OnnxParams:
    path: pathlib.Path = param(doc="ONNX recognition model to import, e.g. buffalo_l's w600k_r50.onnx")
    output: str | None = param(None, "graph output that is the embedding (null: the only output)")
    input_mean: float | None = param(None, "model input = (pixel - mean) / std on 0..255 pixels (null: read from "
                                           "the graph: 0 when it normalises its own input, else 127.5)")
    input_std: float | None = param(None, "the divisor of that (null: read from the graph: 1 or 127.5)")
    bgr: bool | None = param(None, "the model wants BGR channels (null: RGB, InsightFace's order)")
    arch: Literal["auto", "graph", "iresnet"] = param(
        "auto", "iresnet: load an arcface_torch iresnet graph into our iresnetXX module; graph: run the graph op by "
                "op; auto: iresnet when recognised, else graph")
    train_bn: bool = param(False, "update BatchNorm statistics in train mode (not those an export folded into a "
                                  "Conv); frozen by default: fine-tuning batches are small and mixed-resolution")
    check_parity: bool = param(True, "at construction, compare the module with onnxruntime on a fixed batch of "
                                     "synthetic faces")
    tolerance: float = param(1e-4, "largest allowed difference from onnxruntime, relative to the largest output "
                                   "value (embeddings come at any scale)", ge=0)


class FeedingAdapter(nn.Module):
    """Project input -> model input: ``pixel = x * 127.5 + 127.5; (pixel - mean) / std``, flipped for BGR.

    ``ours`` is the project's (mean, std), :data:`lrfr_plugins.onnx_model.feeding.DEFAULT_MEAN`/``DEFAULT_STD``.
    """

    def __init__(self, ours: tuple[float, float], mean: float, std: float, bgr: bool):
        super().__init__()
        (self.our_mean, self.our_std), self.mean, self.std, self.bgr = ours, mean, std, bgr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x * self.our_std + self.our_mean - self.mean) / self.std
        return y.flip(1) if self.bgr else y


class OnnxBackbone(Backbone):
    """An ONNX recognizer (a file's graph, or an arcface_torch iresnet) as a trainable backbone."""

    Params = OnnxParams

    def __init__(self, params: OnnxParams):
        super().__init__(params)
        from ...onnx_model.feeding import DEFAULT_MEAN, DEFAULT_STD, load_onnx, read_feeding

        where = str(params.path)
        if not params.path.is_file():
            raise LrfrError(f"backbone 'onnx': {where} does not exist (or is not a file). Point 'path' at an ONNX "
                            "recognition model, e.g. ~/.insightface/models/buffalo_l/w600k_r50.onnx.")
        model = load_onnx(params.path)
        self.feeding = read_feeding(model, params.path, mean=params.input_mean, std=params.input_std,
                                    bgr=params.bgr, output=params.output)
        self.fixed_bn: list[str] = []  # BNs whose statistics never train (see iresnet_import)
        self.net, self.imported_as, self.import_note = self._import(model, where)
        feeding = self.feeding
        feeds_ours = (feeding.mean, feeding.std, feeding.bgr) == (DEFAULT_MEAN, DEFAULT_STD, False)
        self.adapter = None if feeds_ours else FeedingAdapter((DEFAULT_MEAN, DEFAULT_STD), feeding.mean, feeding.std,
                                                              feeding.bgr)
        self._embedding_size, self.flatten = self._output_shape(model, where)
        self.parity_max_diff: float | None = None
        if params.check_parity:
            self.parity_max_diff = self._check_parity(where)
        self.train(self.training)  # applies the BatchNorm freezing

    @property
    def embedding_size(self) -> int:
        return self._embedding_size

    def _import(self, model: Any, where: str) -> tuple[nn.Module, str, str]:
        from .iresnet_import import NotIResNet, import_iresnet
        from ...onnx_model.to_torch import convert

        note = ""
        if self.params.arch in ("auto", "iresnet"):
            try:
                net, self.fixed_bn = import_iresnet(model, self.feeding.output_name)
                return net, "iresnet", "an arcface_torch iresnet"
            except NotIResNet as exc:
                if self.params.arch == "iresnet":
                    raise LrfrError(f"backbone 'onnx': {where} is not an arcface_torch iresnet ({exc}). Set arch: "
                                    "auto (or graph) to run its graph op by op.") from None
                note = f"not an arcface_torch iresnet ({exc})"
        return convert(model, self.feeding.output_name, where=where, train_bn=self.params.train_bn), "graph", note

    def _output_shape(self, model: Any, where: str) -> tuple[int, bool]:
        """(D, whether to flatten an (N, D, 1, 1) output), from the declared shape or from one forward pass."""
        dims: list[int | None] = []
        for value in model.graph.output:
            if value.name == self.feeding.output_name and value.type.tensor_type.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if not dims or any(d is None for d in dims[1:]):
            was = self.training
            with torch.no_grad():
                dims = [None, *self.eval()._raw(torch.zeros(1, 3, self.input_size, self.input_size)).shape[1:]]
            self.train(was)
        if len(dims) == 2 or (len(dims) == 4 and dims[2:] == [1, 1]):
            return int(dims[1]), len(dims) == 4
        raise LrfrError(f"backbone 'onnx': {where}: the output {self.feeding.output_name!r} has shape "
                        f"{['N', *dims[1:]]}; an embedding is (N, D) or (N, D, 1, 1). Name the embedding with "
                        "'output'.")

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.adapter is None else self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._raw(x)
        return out.flatten(1) if self.flatten else out

    def train(self, mode: bool = True) -> OnnxBackbone:
        """Train mode; BatchNorms stay in eval mode (running statistics used, never updated) unless ``train_bn``,
        and the BNs an iresnet import un-folded always do (their original statistics are not in the file)."""
        super().train(mode)
        fixed = set(self.fixed_bn)
        for name, module in self.net.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and (not self.params.train_bn or name in fixed):
                module.eval()
        return self

    def _check_parity(self, where: str) -> float:
        """Largest |torch - onnxruntime| relative to the largest |output|; LrfrError beyond ``tolerance``."""
        from ...onnx_model.runtime import open_session, run_batches
        from ...ops.preprocess import to_network_input
        from ...synthetic import SyntheticFaceGenerator

        rgb = SyntheticFaceGenerator(PARITY_SEED, "test").render(np.arange(PARITY_FACES), np.zeros(PARITY_FACES, int))
        images = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
        was = self.training
        with torch.no_grad():
            ours = self.eval()(to_network_input(images)).numpy()
        self.train(was)
        feed = self.feeding.to_model_input(images)
        try:
            theirs = run_batches(open_session(where, ["CPUExecutionProvider"]), self.feeding, feed, where=where,
                                 batch_size=len(feed))
        except LrfrError as exc:
            raise LrfrError(f"backbone 'onnx': cannot check the import against onnxruntime: {exc} Set check_parity: "
                            "false to use the imported module unchecked.") from None
        theirs = theirs.reshape(len(feed), -1)
        scale = float(np.abs(theirs).max()) or 1.0
        diff = float(np.abs(ours - theirs).max()) / scale
        if not diff <= self.params.tolerance:
            how = "our iresnet module" if self.imported_as == "iresnet" else "the op-by-op graph"
            quantises = self.imported_as == "graph" and "QuantizeLinear" in self.net.ops
            hint = (" This graph quantises activations: float rounding (1e-7) before a rounding step moves a few "
                    "values a whole quantisation step, so such models need a tolerance near 1e-2.") if quantises else ""
            raise LrfrError(
                f"backbone 'onnx': the module imported from {where} ({how}) differs from onnxruntime by {diff:.3g} "
                f"(largest |difference| over the largest |output|, {scale:.3g}) on {PARITY_FACES} synthetic faces, "
                f"more than tolerance {self.params.tolerance:g}. The conversion is wrong for this model: try arch: "
                f"graph (or iresnet), or raise 'tolerance' if the difference is float rounding.{hint}")
        return diff
