"""The runtime: an edge-saliency ONNX file opened with ONNX Runtime or OpenVINO (SaliencyModel,
Result), the engines and execution providers, and what the machine is."""
