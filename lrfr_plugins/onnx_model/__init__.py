"""ONNX recognition models: how each wants to be fed (:mod:`.feeding`), read from its graph, not guessed from names."""
