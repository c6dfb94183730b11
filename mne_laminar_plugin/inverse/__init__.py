"""Laminar inference: per-layer Bayesian model comparison (MSP and EBB free energy).

:func:`compare_layers` fits one source model per layer to the same data and
returns their negative free energies (:class:`LayerEvidence`), as laMEG's
``model_comparison`` and ``sliding_window_model_comparison`` do through SPM,
reimplemented natively (``_reml``: ReML and free energy; ``_patches``:
geodesic Gaussian patches; ``_temporal``: DCT/Hann/SVD temporal reduction).
"""

from ._compare import STRONG_DF, LayerEvidence, compare_layers

__all__ = ["LayerEvidence", "STRONG_DF", "compare_layers"]
