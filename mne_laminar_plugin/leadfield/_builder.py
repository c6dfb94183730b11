""":class:`LeadfieldBuilder`: a laminar leadfield simulated, loaded or random.

The API is compatible with the seed tutorial's ``LeadfieldBuilder``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from mne.utils import _check_option, _validate_type, verbose

from .._conventions import (
    ARBITRARY,
    FORWARD_ENGINES,
    GRAD_UNITS,
    LEADFIELD_MODES,
    ORIENTATION_TYPES,
)
from ._data import (
    LeadfieldData,
    _ch_meta_from_info,
    _collapse,
    _provenance,
    _validate,
    describe_sensors,
)
from ._formats import _missing_message, read_leadfield
from ._units import convert_grad_unit, si_to_target_units

#: Builder settings a ``config`` mapping of ``get_leadfield`` may override.
_CONFIG_KEYS = (
    "leadfield_dir", "subjects_dir", "surfaces", "bem", "trans", "info", "mindist",
    "engine", "meg", "eeg", "session", "surfaces_kwargs", "dtype", "n_jobs",
    "grad_unit",
)  # fmt: skip


# ================================================================= builder
class LeadfieldBuilder:
    """Build, load or generate a laminar leadfield (CaliBrain-compatible).

    Parameters
    ----------
    leadfield_dir : path-like | None
        Folder of files for ``retrieve_mode="load"``
        (``{subject}_{fixed|free}_leadfield.npz``, this package's
        ``*_leadfield.h5``, or MNE ``*-fwd.fif``/``*_fwd.fif``). Not needed by
        the other modes.
    subjects_dir : path-like | None
        FreeSurfer subjects folder (simulate: default BEM and surfaces).
    surfaces : LaminarSurfaces | path-like | callable | None
        Simulate: the laminar surfaces; a derivative root folder (read with
        ``LaminarSurfaces.load(root, subject, session)``); a callable
        ``surfaces(subject)``; or None to build them with
        ``LaminarSurfaces.from_freesurfer(subject, subjects_dir, **surfaces_kwargs)``.
    bem : path-like | ConductorModel | callable | None
        Simulate: BEM solution or sphere model (callable: ``bem(subject)``).
        None: the single ``<subjects_dir>/<subject>/bem/<subject>-*-bem-sol.fif``.
    trans : path-like | Transform | "fsaverage" | "identity" | callable
        Simulate: head <-> MRI transform (callable: ``trans(subject)``).
    info : path-like | mne.Info | callable
        Simulate: measurement info (FIF) with the sensors.
    mindist : float
        Simulate: minimum distance (mm) of every layer to the inner skull.
    engine : "mne" | "fast"
        Simulate: forward engine (see :func:`~mne_laminar_plugin.forward.compute_laminar_forward`).
    meg, eeg : bool
        Simulate: channel types to include.
    session : str | None
        Session of the surfaces when ``surfaces`` is a derivative root.
    surfaces_kwargs : dict | None
        Passed to ``LaminarSurfaces.from_freesurfer``.
    dtype : "float64" | "float32"
        Simulate: dtype of the leadfield.
    n_jobs : int | None
        Simulate: passed to the forward engine.
    grad_unit : "fT/cm" | "fT/m"
        Planar gradiometers in this package's fT/cm/nAm (default) or
        CaliBrain's fT/m/nAm (×100), for every mode.
    verbose : bool | str | int | None
        MNE log level of the forward computations (None: MNE's global level).

    Notes
    -----
    The builder holds configuration only: each call returns fresh metadata.
    """

    def __init__(
        self,
        leadfield_dir=None,
        *,
        subjects_dir=None,
        surfaces=None,
        bem=None,
        trans=None,
        info=None,
        mindist=5.0,
        engine="fast",
        meg=True,
        eeg=True,
        session=None,
        surfaces_kwargs=None,
        dtype="float64",
        n_jobs=None,
        grad_unit="fT/cm",
        verbose=None,
    ):

        if leadfield_dir is not None:
            _validate_type(leadfield_dir, "path-like", "leadfield_dir")
        _check_option("engine", engine, FORWARD_ENGINES)
        _validate_type(mindist, "numeric", "mindist")
        _check_option("dtype", np.dtype(dtype).name, ("float64", "float32"))
        _check_option("grad_unit", grad_unit, tuple(GRAD_UNITS))
        self.grad_unit = grad_unit
        self.leadfield_dir = None if leadfield_dir is None else Path(leadfield_dir)
        self.subjects_dir = None if subjects_dir is None else Path(subjects_dir)
        self.surfaces = surfaces
        self.bem = bem
        self.trans = trans
        self.info = info
        self.mindist = float(mindist)
        self.engine = engine
        self.meg = bool(meg)
        self.eeg = bool(eeg)
        self.session = session
        self.surfaces_kwargs = dict(surfaces_kwargs or {})
        self.dtype = np.dtype(dtype)
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __repr__(self):
        return f"<LeadfieldBuilder | leadfield_dir={self.leadfield_dir}, engine={self.engine!r}>"

    @verbose
    def get_leadfield(
        self,
        subject="fsaverage",
        orientation_type="fixed",
        retrieve_mode="load",
        config=None,
        n_sensors=64,
        n_sources=1284,
        return_metadata=False,
        random_state=None,
        *,
        fname=None,
        n_layers=1,
        verbose=None,
    ):
        """Get a leadfield by loading, simulating or generating it.

        Parameters
        ----------
        subject : str
            Subject name (file prefix for load; FreeSurfer subject for simulate).
        orientation_type : "fixed" | "free"
        retrieve_mode : "load" | "simulate" | "random"
        config : dict | None
            CaliBrain's 4th argument: settings of this call. A mapping of
            this builder's parameters (e.g. ``{"info": ..., "trans": ...}``)
            overriding them for this call only; None: the builder's own.
            (CaliBrain's YAML simulation configs describe its own pipeline
            and are not read.)
        n_sensors, n_sources : int
            Shape of a random leadfield (random mode only).
        return_metadata : bool
            Return a :class:`LeadfieldData` instead of the array.
        random_state : None | int | np.random.Generator | np.random.RandomState
            Random mode: the seed (the same seed gives the same matrix).
        fname : path-like | None
            Load: an explicit file instead of the search in ``leadfield_dir``.
        n_layers : int
            Random mode: number of layers the sources are split into.
        %(verbose)s

        Returns
        -------
        leadfield : ndarray | LeadfieldData
            ``(n_sensors, n_sources)`` fixed, ``(n_sensors, n_sources, K)`` free.
        """
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        _check_option("retrieve_mode", retrieve_mode, LEADFIELD_MODES)
        _validate_type(subject, str, "subject")
        if config is not None:
            return self._configured(config).get_leadfield(
                subject, orientation_type, retrieve_mode, None, n_sensors, n_sources,
                return_metadata, random_state, fname=fname, n_layers=n_layers,
            )  # fmt: skip
        if retrieve_mode == "random":
            data = self.random(
                orientation_type, n_sensors, n_sources, random_state=random_state,
                n_layers=n_layers, subject=subject,
            )  # fmt: skip
        elif retrieve_mode == "load":
            data = self.load(subject, orientation_type, fname=fname)
        else:
            data = self.simulate(subject, orientation_type)
        if not data.synthetic:
            convert_grad_unit(data, self.grad_unit)
        return data if return_metadata else data.leadfield

    def _configured(self, config):
        """A copy of this builder with the settings of ``config``."""
        import copy

        _validate_type(config, dict, "config")
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"config has unknown key(s) {unknown}; it may set the builder "
                f"parameters {list(_CONFIG_KEYS)} (CaliBrain's YAML simulation "
                "settings are not read: pass info, trans, bem, surfaces instead)"
            )
        kwargs = {key: getattr(self, key) for key in _CONFIG_KEYS}
        kwargs.update(config)
        kwargs["verbose"] = self.verbose
        return type(self)(**copy.copy(kwargs))

    # ----------------------------------------------------------- random
    def random(
        self, orientation_type="fixed", n_sensors=64, n_sources=1284, *,
        random_state=None, n_layers=1, subject=None,
    ) -> LeadfieldData:  # fmt: skip
        """A standard-normal synthetic leadfield (no physical meaning)."""
        from mne.utils import check_random_state

        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        for name, val in (("n_sensors", n_sensors), ("n_sources", n_sources), ("n_layers", n_layers)):
            _validate_type(val, "int", name)
            if val < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if n_sources % n_layers:
            raise ValueError(
                f"n_sources ({n_sources}) must be a multiple of n_layers ({n_layers})"
            )
        rng = check_random_state(random_state)
        shape = (n_sensors, n_sources) + ((3,) if orientation_type == "free" else ())
        lf = rng.standard_normal(shape)
        n_col = n_sources // n_layers
        seed = random_state if isinstance(random_state, int | np.integer) else None
        data = LeadfieldData(
            leadfield=lf,
            ch_names=[f"RND{i:03d}" for i in range(n_sensors)],
            units=[ARBITRARY] * n_sensors,
            ch_types=["misc"] * n_sensors,
            layer=np.repeat(np.arange(n_layers), n_col),
            column=np.tile(np.arange(n_col), n_layers),
            n_layers=int(n_layers),
            n_columns=int(n_col),
            orientation_type=orientation_type,
            synthetic=True,
            Q_basis=(
                np.broadcast_to(np.eye(3), (n_sources, 3, 3)).copy()
                if orientation_type == "free"
                else None
            ),
            provenance=_provenance(
                "random", subject=subject, random_state=seed,
                random_state_given=random_state is not None,
                distribution="standard normal, arbitrary units",
            ),  # fmt: skip
        )
        return data

    # ------------------------------------------------------------- load
    def _candidates(self, subject, orientation_type):
        folder = self.leadfield_dir
        subs = [subject] + ([f"sub-{subject}"] if not subject.startswith("sub-") else [])
        tried = [f"{subject}_{orientation_type}_leadfield.npz"]
        exact = folder / tried[0]
        if exact.is_file():
            return [exact], tried
        for patterns in (
            [f"{s}_*leadfield.h5" for s in subs] + [f"{s}_leadfield.h5" for s in subs],
            [f"{s}{sep}fwd.fif" for s in subs for sep in ("-", "_")]
            + [f"{s}_*fwd.fif" for s in subs] + [f"{s}-*fwd.fif" for s in subs],
        ):  # fmt: skip
            tried += patterns
            found = sorted({p for pat in patterns for p in folder.glob(pat)})
            if found:
                return found, tried
        return [], tried

    def find(self, *names, orientation_type="fixed") -> Path:
        """The file of ``leadfield_dir`` that :meth:`load` reads for a subject.

        Parameters
        ----------
        *names : str
            The subject's names, tried in turn (e.g. ``"sub-01", "01"``): for
            each, ``<name>_<orientation_type>_leadfield.npz``, then
            ``<name>_*leadfield.h5``, then ``<name>[-_]*fwd.fif`` (also with
            ``sub-`` prepended).
        orientation_type : "fixed" | "free"
            The orientation of the ``.npz`` name.

        Returns
        -------
        fname : Path
            The one matching file (several matching files of a name are an
            error, as is none for every name, listing the folder).
        """
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        if self.leadfield_dir is None:
            raise ValueError(
                "retrieve_mode='load' needs leadfield_dir (or fname=): "
                "LeadfieldBuilder(leadfield_dir=...)"
            )
        if not self.leadfield_dir.is_dir():
            raise FileNotFoundError(
                f"leadfield_dir {self.leadfield_dir} does not exist or is not a folder"
            )
        tried = []
        for name in names:
            found, patterns = self._candidates(name, orientation_type)
            tried += patterns
            if len(found) > 1:
                raise ValueError(
                    f"Several leadfield files match subject {names[-1]!r} in "
                    f"{self.leadfield_dir}: {[p.name for p in found]}; keep one per "
                    "subject, or pass fname="
                )
            if found:
                return found[0]
        raise FileNotFoundError(_missing_message(self.leadfield_dir, tried))

    def load(self, subject, orientation_type="fixed", *, fname=None) -> LeadfieldData:
        """Load a leadfield file (see :func:`read_leadfield` and :meth:`find`)."""
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        if fname is None:
            fname = self.find(subject, orientation_type=orientation_type)
        data = read_leadfield(fname, orientation_type=orientation_type)
        data.provenance = dict(data.provenance, mode="load", subject=subject)
        return data

    # --------------------------------------------------------- simulate
    def _resolve(self, value, subject):
        return value(subject) if callable(value) and not hasattr(value, "layers") else value

    def _surfaces_for(self, subject):
        surfaces = self.surfaces
        if surfaces is not None and hasattr(surfaces, "layers"):
            return surfaces
        if callable(surfaces):
            return surfaces(subject)
        from ..surfaces import LaminarSurfaces

        if surfaces is not None:
            return LaminarSurfaces.load(surfaces, subject, self.session)
        if self.subjects_dir is None:
            raise ValueError(
                "simulate needs the laminar surfaces: pass surfaces= (a "
                "LaminarSurfaces, a derivative root, or a callable) or "
                "subjects_dir= to build them from FreeSurfer"
            )
        return LaminarSurfaces.from_freesurfer(
            subject, self.subjects_dir, **self.surfaces_kwargs
        )

    def _bem_for(self, subject):
        bem = self._resolve(self.bem, subject)
        if bem is not None:
            return bem
        if self.subjects_dir is None:
            raise ValueError("simulate needs bem= (or subjects_dir= to find the BEM solution)")
        folder = self.subjects_dir / subject / "bem"
        found = sorted(folder.glob(f"{subject}-*-bem-sol.fif"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise FileNotFoundError(
                f"Found {what} BEM solution(s) {folder}/{subject}-*-bem-sol.fif "
                f"({[p.name for p in found]}); pass bem= explicitly (MBP makes it "
                "in step source/make_bem_solution)"
            )
        return found[0]

    def simulate(self, subject, orientation_type="fixed") -> LeadfieldData:
        """The MNE forward on the subject's laminar source space, in target units."""
        from ..forward import compute_laminar_forward

        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        info = self._resolve(self.info, subject)
        trans = self._resolve(self.trans, subject)
        if info is None:
            raise ValueError("simulate needs info= (a FIF file or mne.Info with the sensors)")
        if trans is None:
            raise ValueError(
                "simulate needs trans= (a -trans.fif, a Transform, 'fsaverage' "
                "or 'identity')"
            )
        surfaces = self._surfaces_for(subject)
        bem = self._bem_for(subject)
        fwd = compute_laminar_forward(
            surfaces, info, trans, bem, orientation_type=orientation_type,
            mindist=self.mindist, engine=self.engine, meg=self.meg, eeg=self.eeg,
            dtype=self.dtype, subject=subject, n_jobs=self.n_jobs, verbose=self.verbose,
        )  # fmt: skip
        return from_laminar_forward(
            fwd, subject=subject,
            inputs=dict(bem=_describe(bem), trans=_describe(trans), info=_describe(info)),
        )  # fmt: skip


def _describe(obj):
    if isinstance(obj, str | os.PathLike):
        return str(obj)
    return f"instance of {type(obj).__name__}"


def from_laminar_forward(fwd, *, subject=None, inputs=None) -> LeadfieldData:
    """LeadfieldData from a :class:`~mne_laminar_plugin.forward.LaminarForward`.

    The SI gain is converted to target units **in place** (the matrix is not
    copied); ``fwd`` should not be used afterwards.
    """
    gain, exps, labels = si_to_target_units(fwd.gain, fwd.info)
    kinds, units, coils, types = _ch_meta_from_info(fwd.info)
    n_ch = gain.shape[0]
    n_src = fwd.n_sources
    free = fwd.orientation_type == "free"
    data = LeadfieldData(
        leadfield=gain.reshape(n_ch, n_src, 3) if free else gain,
        sensor_kind=_collapse(kinds),
        sensor_units=_collapse(units),
        sensor_unitmult=_collapse(exps),
        coil_type=_collapse(coils),
        src_coords=fwd.rr_head,
        Q_basis=np.broadcast_to(np.eye(3), (n_src, 3, 3)).copy() if free else None,
        ch_names=fwd.ch_names,
        units=labels,
        ch_types=types,
        layer=fwd.layer,
        column=fwd.column,
        n_layers=fwd.n_layers,
        n_columns=fwd.n_columns,
        orientation_type=fwd.orientation_type,
        synthetic=False,
        src_ori=fwd.nn_head,
        info=fwd.info,
        mri_head_t=fwd.mri_head_t,
        dropped_columns=np.asarray(fwd.dropped["columns"], int),
        dropped_reasons=list(fwd.dropped["reasons"]),
        column_hemi=fwd.hemi,
        column_vertno=fwd.vertno,
        provenance=_provenance(
            "simulate", subject=subject, fs_subject=subject, engine=fwd.engine,
            mindist_mm=fwd.mindist, conductor=fwd.conductor,
            sensors=describe_sensors(fwd.info),
            dropped_counts=fwd.dropped["counts"], timings_s=fwd.timings,
            orientation_basis=(
                "x/y/z of the head frame" if free
                else "projection of the free leadfield on src_ori (head frame)"
            ),
            **(inputs or {}),
        ),  # fmt: skip
    )
    _validate(data, check_finite=False)
    return data


def attach_surface_layout(data: LeadfieldData, surfaces, *, fname=None) -> LeadfieldData:
    """Check a loaded leadfield against the layer surfaces; give it their layout.

    A leadfield with its own layout (``n_layers > 1``) must have the layers
    and columns of ``surfaces``; one without (a single "layer") must have
    ``n_layers * n_columns`` sources, which are then taken as layer-major.
    The columns get the surfaces' hemispheres and vertex ids.

    Parameters
    ----------
    data : LeadfieldData
        Modified in place.
    surfaces : LaminarSurfaces | None
        None: nothing to check.
    fname : path-like | None
        The file ``data`` was read from, named in the error.

    Returns
    -------
    data : LeadfieldData

    Raises
    ------
    ValueError
        If the layout does not match the surfaces.
    """
    if surfaces is None:
        return data
    where = f"{fname}" if fname is not None else "The leadfield"
    want = (surfaces.n_layers, surfaces.n_columns)
    fix = (
        " Load the leadfield computed on these layer surfaces (same "
        "laminar_n_layers and laminar_column_spacing), or recompute the surfaces "
        "to match it."
    )
    if data.n_layers > 1:
        if (data.n_layers, data.n_columns) != want:
            raise ValueError(
                f"{where} has {data.n_layers} layers x {data.n_columns} columns, but "
                f"the layer surfaces have {want[0]} layers x {want[1]} columns.{fix}"
            )
    elif data.n_sources == want[0] * want[1]:
        data.n_layers, data.n_columns = want
        data.layer = np.repeat(np.arange(want[0]), want[1])
        data.column = np.tile(np.arange(want[1]), want[0])
        data.provenance["layout"] = "layer-major, from the layer surfaces"
    else:
        raise ValueError(
            f"{where} has {data.n_sources} sources and no layer/column layout; the "
            f"layer surfaces need {want[0]} layers x {want[1]} columns = "
            f"{want[0] * want[1]} sources (layer-major).{fix}"
        )
    data.column_hemi, data.column_vertno = surfaces.hemi, surfaces.vertno
    return data
