"""Subject columns on a FreeSurfer template: nearest column on the registered spheres."""

from __future__ import annotations

import numpy as np

#: template vertices farther than this times the median column spacing from
#: every column (medial wall, dropped columns) are left NaN
GAP_FACTOR = 2.0


def _unit(rr):
    rr = np.asarray(rr, float)
    return rr / np.linalg.norm(rr, axis=-1, keepdims=True)


def map_to_template(pred_hemi, pred_vertno, values, sphere_subject, sphere_template):
    """Values of one hemisphere's columns on every template vertex.

    Nearest column on the registered spheres (directions compared, so the
    sphere radii do not matter). Template vertices farther from every column
    than ``GAP_FACTOR`` times the median column spacing (the removed medial
    wall, dropped columns) get NaN instead of an extrapolated value.

    Parameters
    ----------
    pred_hemi, pred_vertno : array, shape (n_columns,)
        Columns of the hemisphere (vertex ids into ``sphere_subject``).
    values : array, shape (n_columns,)
        Value per column (NaN allowed).
    sphere_subject : array, shape (n_vertices, 3)
        The subject's ``?h.sphere.reg`` vertices.
    sphere_template : array, shape (n_template, 3)
        The template's ``?h.sphere.reg`` vertices.

    Returns
    -------
    mapped : array, shape (n_template,)
        Value of the nearest column (NaN where that column is NaN or too far).
    nearest : array of int, shape (n_template,)
        Index (into the given columns) of the nearest column.
    """
    from scipy.spatial import cKDTree

    del pred_hemi
    sub = _unit(np.asarray(sphere_subject, float)[np.asarray(pred_vertno, np.int64)])
    tpl = _unit(sphere_template)
    tree = cKDTree(sub)
    dist, nearest = tree.query(tpl)
    mapped = np.asarray(values, float)[nearest]
    if len(sub) > 1:
        spacing = np.median(tree.query(sub, k=2)[0][:, 1])
        mapped[dist > GAP_FACTOR * spacing] = np.nan
    return mapped, nearest


def nearest_template_vertex(direction, sphere_template) -> int:
    """The template vertex nearest a direction on the registered sphere.

    Parameters
    ----------
    direction : array, shape (3,)
        A point of the subject's ``?h.sphere.reg`` (only its direction counts).
    sphere_template : array, shape (n_template, 3)
        The template's ``?h.sphere.reg`` vertices.

    Returns
    -------
    vertex : int
    """
    from scipy.spatial import cKDTree

    return int(cKDTree(_unit(sphere_template)).query(_unit(direction))[1])
