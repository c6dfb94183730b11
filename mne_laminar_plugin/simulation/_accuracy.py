"""Result of the laminar accuracy simulation and its analysis.

Metrics follow Szul et al. (2025): ``peak_l = argmax_k F[k, l]``; the layer
error of a column is ``mean_l |l - peak_l|``, its bias ``mean_l (l -
peak_l)`` (positive: the peak is more superficial than the truth), the
error in mm ``error * thickness / n_layers`` (the paper's conversion) or
from the actual spacing of the layers along the column, and a column is
accurate when every simulated layer is recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from mne.utils import _validate_type

#: Szul et al. 2025: 5-fold CV ROC-AUC of the logistic regression on the raw
#: predictors (one subject, 29,130 columns, -20 dB), mean and std over folds
PAPER_AUC = (0.810, 0.013)
PAPER_ACCURATE_FRACTION = 24699 / 29130
#: the paper's feature order (raw predictors of the logistic regression)
FEATURES = ("lf_rms_diff", "radiality", "distance", "thickness")


@dataclass(repr=False)
class LaminarAccuracy:
    """Free energies and accuracy of a laminar simulation, per column.

    Arrays with an ``n_snr`` axis hold one entry per SNR of ``snr_db``.

    Attributes
    ----------
    free_energy : ndarray, shape (n_snr, n_columns, n_layers, n_true)
        F (nats) of layer model ``k`` (axis 2) on the simulation of the true
        layer ``true_layers[j]`` (axis 3) at each column.
    snr_db : ndarray, shape (n_snr,)
    columns : ndarray of int, shape (n_columns,)
        Simulated columns (surfaces numbering).
    hemi, vertno : ndarray, shape (n_columns,)
        Hemisphere and FreeSurfer vertex of each column.
    true_layers : ndarray of int, shape (n_true,)
        Simulated layers (0 = pial).
    depth_mm : ndarray, shape (n_columns, n_layers)
        Distance of each layer from pial along each column (mm).
    thickness_mm : ndarray, shape (n_columns,)
        Pial-white distance of each column (mm).
    fractions : ndarray, shape (n_layers,)
        Depth of each layer as the fraction of thickness from white.
    settings : dict
        Every setting of the simulation.
    """

    free_energy: np.ndarray
    snr_db: np.ndarray
    columns: np.ndarray
    hemi: np.ndarray
    vertno: np.ndarray
    true_layers: np.ndarray
    depth_mm: np.ndarray
    thickness_mm: np.ndarray
    fractions: np.ndarray
    settings: dict = field(default_factory=dict)

    # ---------------------------------------------------------- metrics
    @property
    def n_layers(self) -> int:
        """Number of layer models."""
        return self.free_energy.shape[2]

    @property
    def n_columns(self) -> int:
        """Number of simulated columns."""
        return len(self.columns)

    @property
    def peak(self) -> np.ndarray:
        """Layer model with the highest F, shape (n_snr, n_columns, n_true)."""
        return np.argmax(self.free_energy, axis=2)

    @property
    def delta_f(self) -> np.ndarray:
        """F relative to the worst layer model of each simulation (nats)."""
        return self.free_energy - self.free_energy.min(axis=2, keepdims=True)

    @property
    def mean_delta_f(self) -> np.ndarray:
        """Mean over columns of ΔF, shape (n_snr, n_layers, n_true) (model x true)."""
        return self.delta_f.mean(axis=1)

    @property
    def layer_error(self) -> np.ndarray:
        """Mean absolute layer error per column, shape (n_snr, n_columns) (layers)."""
        return np.abs(self.true_layers - self.peak).mean(axis=-1)

    @property
    def bias(self) -> np.ndarray:
        """Mean (true - peak) per column (layers; > 0: peak more superficial)."""
        return (self.true_layers - self.peak).mean(axis=-1)

    @property
    def error_mm_paper(self) -> np.ndarray:
        """Layer error x thickness / n_layers (mm): the paper's conversion."""
        return self.layer_error * self.thickness_mm / self.n_layers

    @property
    def error_mm_exact(self) -> np.ndarray:
        """Mean absolute difference ``depth(true) - depth(peak)`` along each column (mm)."""
        depth = self.depth_mm  # (C, L)
        c = np.arange(self.n_columns)[:, None]
        d_true = depth[c, self.true_layers[None, :]]  # (C, Ls)
        d_peak = depth[c[None], self.peak]  # (n_snr, C, Ls)
        return np.abs(d_true - d_peak).mean(axis=-1)

    @property
    def accurate(self) -> np.ndarray:
        """Every simulated layer recovered exactly, shape (n_snr, n_columns)."""
        return (self.peak == self.true_layers).all(axis=-1)

    @property
    def confusion(self) -> np.ndarray:
        """Counts of (true layer, peak layer), shape (n_snr, n_true, n_layers)."""
        n_snr, n_c, n_t = self.peak.shape
        out = np.zeros((n_snr, n_t, self.n_layers), np.int64)
        s = np.repeat(np.arange(n_snr), n_c * n_t)
        t = np.tile(np.arange(n_t), n_snr * n_c)
        np.add.at(out, (s, t, self.peak.ravel()), 1)
        return out

    def _snr_index(self, snr_db):
        if snr_db is None:
            if len(self.snr_db) > 1:
                raise ValueError(
                    f"this simulation has SNRs {self.snr_db.tolist()} dB: pass snr_db="
                )
            return 0
        hit = np.flatnonzero(np.isclose(self.snr_db, float(snr_db)))
        if not hit.size:
            raise ValueError(f"snr_db={snr_db} was not simulated (have {self.snr_db.tolist()})")
        return int(hit[0])

    def __repr__(self) -> str:
        acc = ", ".join(f"{s:g} dB {100 * a:.1f} %"
                        for s, a in zip(self.snr_db, self.accurate.mean(1)))  # fmt: skip
        return (f"<LaminarAccuracy | {self.n_columns} columns x {len(self.true_layers)} true "
                f"layers x {self.n_layers} models, accurate: {acc}>")  # fmt: skip

    # ------------------------------------------------------ predictivity
    def predictivity(self, predictors, *, snr_db=None, n_folds=5, random_forest=False,
                     random_state=0, weights=None):  # fmt: skip
        """How well the anatomical predictors predict which columns are accurate.

        As the paper: a logistic regression (l2, liblinear) of ``accurate``
        on the four raw predictors (``lf_rms_diff, radiality, distance,
        thickness``), scored by the ROC-AUC of stratified k-fold
        cross-validation; also on z-scored predictors, the AUC of the
        composite anatomical score alone (no fit), and optionally a random
        forest's AUC and feature importances.

        Parameters
        ----------
        predictors : AnatomicalPredictors
            Predictors of the same surfaces (all their columns).
        snr_db : float | None
            Which SNR of a sweep (None: the only one).
        n_folds : int
            Cross-validation folds (paper: 5).
        random_forest : bool
            Also fit a random forest (200 trees).
        random_state : int
            Seed of the folds and of the forest.
        weights : dict | None
            Weights of the composite score whose AUC ``auc_score`` is (see
            :func:`~mne_laminar_plugin.anatomical_score`; None: the paper's).

        Returns
        -------
        result : dict
            ``auc_raw``/``auc_zscored``/``auc_random_forest`` (mean, std over
            folds), ``auc_score``, ``roc_score`` (fpr, tpr of the score),
            ``confusion`` (2 x 2 counts of the cross-validated logistic
            predictions: rows actual inaccurate/accurate, columns predicted),
            ``coefficients`` (raw fit on all columns), ``importances``,
            ``n_columns``, ``n_accurate``, ``paper_auc``.
        """
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve
        from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from ..predictors import AnatomicalPredictors

        _validate_type(predictors, AnatomicalPredictors, "predictors")
        if predictors.n_columns <= int(self.columns.max()):
            raise ValueError(
                f"predictors has {predictors.n_columns} columns but the simulation used "
                f"column {int(self.columns.max())}: use the predictors of the same surfaces"
            )
        if not (np.array_equal(predictors.vertno[self.columns], self.vertno)
                and np.array_equal(predictors.hemi[self.columns], self.hemi)):  # fmt: skip
            raise ValueError("predictors and the simulation have different column vertices")
        i = self._snr_index(snr_db)
        X = np.column_stack([getattr(predictors, f)[self.columns] for f in FEATURES])
        score = predictors.score(weights)[self.columns]
        ok = np.isfinite(X).all(1) & np.isfinite(score)
        X, score, y = X[ok], score[ok], self.accurate[i][ok].astype(int)
        counts = np.bincount(y, minlength=2)
        if counts.min() < n_folds:
            raise ValueError(
                f"{counts[1]} accurate and {counts[0]} inaccurate columns: each class needs "
                f"at least n_folds={n_folds} columns for a cross-validated AUC (simulate "
                "more columns or another SNR)"
            )
        cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)

        def logit():
            return LogisticRegression(solver="liblinear")  # l2 penalty

        def auc(model):
            s = cross_val_score(model, X, y, cv=cv, scoring="roc_auc")
            return (float(s.mean()), float(s.std()))

        out = dict(
            snr_db=float(self.snr_db[i]), n_columns=int(len(y)), n_accurate=int(counts[1]),
            features=list(FEATURES), n_folds=int(n_folds),
            auc_raw=auc(logit()),
            auc_zscored=auc(make_pipeline(StandardScaler(), logit())),
            auc_score=float(roc_auc_score(y, score)),
            paper_auc=PAPER_AUC,
        )  # fmt: skip
        fpr, tpr, _ = roc_curve(y, score)
        out["roc_score"] = (fpr, tpr)
        pred = cross_val_predict(logit(), X, y, cv=cv)
        out["confusion"] = confusion_matrix(y, pred, labels=[0, 1])
        out["coefficients"] = dict(zip(FEATURES, logit().fit(X, y).coef_[0].tolist()))
        if random_forest:
            rf = RandomForestClassifier(n_estimators=200, random_state=random_state)
            out["auc_random_forest"] = auc(rf)
            out["importances"] = dict(zip(FEATURES, rf.fit(X, y).feature_importances_.tolist()))
        return out

    # ---------------------------------------------------------- outputs
    def to_dataframe(self):
        """One row per column and SNR.

        Returns
        -------
        df : pandas.DataFrame
            ``snr_db``, ``column``, ``hemi``, ``vertex``, ``accurate``,
            ``layer_error``, ``bias``, ``error_mm_paper``, ``error_mm_exact``,
            ``thickness_mm``.
        """
        import pandas as pd

        n_snr = len(self.snr_db)
        rep = (lambda a: np.tile(a, n_snr))  # fmt: skip
        return pd.DataFrame(
            dict(
                snr_db=np.repeat(self.snr_db, self.n_columns),
                column=rep(self.columns),
                hemi=rep(self.hemi),
                vertex=rep(self.vertno),
                accurate=self.accurate.ravel(),
                layer_error=self.layer_error.ravel(),
                bias=self.bias.ravel(),
                error_mm_paper=self.error_mm_paper.ravel(),
                error_mm_exact=self.error_mm_exact.ravel(),
                thickness_mm=rep(self.thickness_mm),
            )
        )

    def plot(self, *, snr_db=None, show=False):
        """Error and bias vs SNR (or their histograms), mean ΔF, confusion.

        Parameters
        ----------
        snr_db : float | None
            SNR of the ΔF and confusion panels (None: the highest simulated).
        show : bool
            Call ``plt.show()`` (no effect headless).

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        i = int(np.argmax(self.snr_db)) if snr_db is None else self._snr_index(snr_db)
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
        ax = axes[0]
        if len(self.snr_db) > 1:
            order = np.argsort(self.snr_db)
            x = self.snr_db[order]
            for vals, label in ((self.layer_error, "|error|"), (self.bias, "bias")):
                m, s = vals.mean(1)[order], vals.std(1)[order]
                ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=label)
            ax.plot(x, 1 - self.accurate.mean(1)[order], "k--", label="inaccurate fraction")
            ax.set_xlabel("SNR (dB)")
            ax.set_ylabel("layers")
            ax.legend(frameon=False)
        else:
            ax.hist(self.layer_error[0], bins=20, histtype="stepfilled", label="|error|", alpha=0.7)
            ax.hist(self.bias[0], bins=20, histtype="stepfilled", label="bias", alpha=0.7)
            ax.set_xlabel("layers")
            ax.set_ylabel("columns")
            ax.legend(frameon=False)
        ax.set_title(f"{100 * self.accurate.mean(1)[i]:.1f} % accurate at "
                     f"{self.snr_db[i]:g} dB")  # fmt: skip
        ax = axes[1]
        im = ax.imshow(self.mean_delta_f[i], origin="upper", aspect="auto", cmap="viridis")
        ax.set_xticks(np.arange(len(self.true_layers)), self.true_layers)
        ax.set_xlabel("true layer (0 = pial)")
        ax.set_ylabel("layer model")
        ax.set_title(f"mean ΔF (nats), {self.snr_db[i]:g} dB")
        fig.colorbar(im, ax=ax)
        ax = axes[2]
        conf = self.confusion[i] / max(self.n_columns, 1)
        im = ax.imshow(conf.T, origin="upper", aspect="auto", cmap="magma")
        ax.set_xticks(np.arange(len(self.true_layers)), self.true_layers)
        ax.set_xlabel("true layer")
        ax.set_ylabel("peak layer")
        ax.set_title("fraction of columns")
        fig.colorbar(im, ax=ax)
        if show:
            plt.show()
        return fig
