"""Laminar inversion and model comparison."""
