"""Laminar leadfields: :class:`LeadfieldData` and :class:`LeadfieldBuilder`.

``_data`` holds the container and its validation, ``_units`` the conversion
from MNE's SI units (once), ``_npz`` the ``.npz`` layout (lazy, never
unpickled) and the CaliBrain export, ``_formats`` the ``.h5``/``-fwd.fif``
readers and writers and the derivative file name, ``_builder`` the
seed-compatible builder (simulate, load, random), ``_qc`` column norms,
depth ratio, outlier columns and their plots.
"""

from .._conventions import ARBITRARY, GRAD_UNITS, UNIT_LABELS, UNITS, pretty_unit
from ._builder import LeadfieldBuilder, attach_surface_layout, from_laminar_forward
from ._data import LeadfieldData, describe_sensors, reproducible_provenance
from ._formats import (
    FIF_TAG_LIMIT,
    H5_FORMAT,
    H5_FORMAT_VERSION,
    fits_in_fif,
    leadfield_fname,
    read_leadfield,
    with_checksum,
    write_forward_fif,
    write_leadfield,
)
from ._npz import export_calibrain, local_svd_basis
from ._qc import (
    MIN_LOG_SPREAD,
    column_norms,
    depth_ratio,
    flag_outlier_columns,
    plot_column_norms,
    plot_depth_ratio,
)
from ._units import convert_grad_unit, si_factors, si_to_target_units, unit_conversion

__all__ = [
    "pretty_unit",
    "ARBITRARY",
    "attach_surface_layout",
    "column_norms",
    "convert_grad_unit",
    "export_calibrain",
    "GRAD_UNITS",
    "local_svd_basis",
    "depth_ratio",
    "describe_sensors",
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
    "reproducible_provenance",
    "si_factors",
    "si_to_target_units",
    "unit_conversion",
    "UNIT_LABELS",
    "UNITS",
    "with_checksum",
    "write_forward_fif",
    "write_leadfield",
]
