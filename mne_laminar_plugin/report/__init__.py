"""Figures for the report sections."""
