"""Laminar accuracy simulation."""
