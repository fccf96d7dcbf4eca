"""Curate: find and fix the labels that hold a classifier back."""

__version__ = "0.1.0"
