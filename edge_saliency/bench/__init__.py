"""`edge-saliency bench`: latency, throughput and accuracy of precision x engine x provider variants."""
