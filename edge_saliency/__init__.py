"""edge-saliency: the device runtime. Runs an edge-saliency ONNX file with ONNX Runtime.

Never imports torch: the export side lives in the separate ``export`` package.
"""
__version__ = "0.2.0"
