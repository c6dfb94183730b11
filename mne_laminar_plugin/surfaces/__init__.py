"""Cortical layer surfaces with column correspondence: :class:`LaminarSurfaces`.

``_surfaces`` holds the class and its builder (layers between FreeSurfer's
white and pial, columns, masks), ``_freesurfer`` the reading of a FreeSurfer
subject, ``_io`` the BIDS derivative files (GIFTI surfaces, sidecars, names),
``_lameg`` laMEG's ``surf/laminar`` layer sets (read and write).
"""

from .._conventions import HEMIS, check_n_layers, layer_order
from ..mesh import vertex_areas, vertex_normals
from ._io import (
    BIDS_DESCRIPTIONS,
    LAYER_SUFFIX,
    SPATIAL_REFERENCE,
    STALE_PATTERNS,
    columns_fname,
    density_description,
    layer_descriptions,
    layer_fname,
    orientation_fname,
    positions_fname,
    saved_fnames,
    summary_fname,
)
from ._lameg import LAMEG_ORIENTATIONS, lameg_inputs, lameg_layer_names
from ._surfaces import (
    DROP_REASONS,
    ORIENTATION_SIGN,
    ZERO_LENGTH_MM,
    LaminarSurfaces,
    equivolume_beta,
)

__all__ = [
    "BIDS_DESCRIPTIONS",
    "check_n_layers",
    "columns_fname",
    "density_description",
    "DROP_REASONS",
    "equivolume_beta",
    "HEMIS",
    "LaminarSurfaces",
    "LAMEG_ORIENTATIONS",
    "lameg_inputs",
    "lameg_layer_names",
    "layer_descriptions",
    "layer_fname",
    "layer_order",
    "LAYER_SUFFIX",
    "orientation_fname",
    "ORIENTATION_SIGN",
    "positions_fname",
    "saved_fnames",
    "SPATIAL_REFERENCE",
    "STALE_PATTERNS",
    "summary_fname",
    "vertex_areas",
    "vertex_normals",
    "ZERO_LENGTH_MM",
]
