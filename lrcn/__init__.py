"""LRCN model, data pipeline, training and evaluation."""
