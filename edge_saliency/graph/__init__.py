"""The graph builder: any ONNX classifier -> the edge-saliency contract (preprocessing, every
saliency head of edge_saliency.methods, outputs, metadata, checks), plus its discovery, graph
passes, precision variants and safe writes. numpy, onnx and onnxruntime only."""
