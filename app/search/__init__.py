"""Hyper-parameter search: an Optuna study over training recipes, shared by several workers."""
