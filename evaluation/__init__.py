"""Measuring the pipeline against the virtual sensor's ground truth (accuracy, not speed)."""
