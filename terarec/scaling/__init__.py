"""Scaling studies: FLOPs of a model's dense part, size sweeps, power-law fits and plots.

``flops``  forward FLOPs per example of the dense part (embedding lookup excluded)
``sweep``  a grid of model sizes trained on one data set, resumable
``fit``    LogLoss = a + b * C^(-alpha) against compute, R^2, gain per 4x compute
``plot``   one PNG: log-scale compute, points and fitted curves per model family
"""
