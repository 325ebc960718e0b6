"""Benchmarks (accuracy, video latency, confidence calibration, watchlist matching) and the demo."""
