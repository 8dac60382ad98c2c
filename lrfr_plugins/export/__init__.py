"""Exporters: ONNX that InsightFace loads."""
