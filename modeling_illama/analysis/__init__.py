"""Analyses of trained models, the paper's reliability measurements (`illama-analyze`): calibration (ECE, reliability
diagram, confusion matrix), shape bias on cue-conflict stimuli, attention-map rank, int8 quantization (post-training
and QAT), ONNX export; and activation ("information filtering") maps (`illama-activation-maps`)."""
