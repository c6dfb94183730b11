"""Laminar leadfields: :class:`LeadfieldData` and :class:`LeadfieldBuilder`.

``_data`` holds the container and its validation, ``_units`` the conversion
from MNE's SI units (once), ``_formats`` the ``.h5``/``.npz``/``-fwd.fif``
readers and writers and the derivative file name, ``_builder`` the
seed-compatible builder (simulate, load, random), ``_qc`` column norms,
depth ratio, outlier columns and their plots.
"""

from .._conventions import ARBITRARY, UNIT_LABELS, UNITS
from ._builder import LeadfieldBuilder, from_laminar_forward
from ._data import LeadfieldData
from ._formats import (
    FIF_TAG_LIMIT,
    H5_FORMAT,
    H5_FORMAT_VERSION,
    fits_in_fif,
    leadfield_fname,
    read_leadfield,
    write_forward_fif,
    write_leadfield,
)
from ._qc import (
    MIN_LOG_SPREAD,
    column_norms,
    depth_ratio,
    flag_outlier_columns,
    plot_column_norms,
    plot_depth_ratio,
)
from ._units import si_to_target_units, unit_conversion

__all__ = [
    "ARBITRARY",
    "column_norms",
    "depth_ratio",
    "FIF_TAG_LIMIT",
    "fits_in_fif",
    "flag_outlier_columns",
    "from_laminar_forward",
    "H5_FORMAT",
    "H5_FORMAT_VERSION",
    "leadfield_fname",
    "LeadfieldBuilder",
    "LeadfieldData",
    "MIN_LOG_SPREAD",
    "plot_column_norms",
    "plot_depth_ratio",
    "read_leadfield",
    "si_to_target_units",
    "unit_conversion",
    "UNIT_LABELS",
    "UNITS",
    "write_forward_fif",
    "write_leadfield",
]
