"""Deployment configs generated from the one preprocessing spec: DeepStream nvinfer and Triton."""
