"""Generic plugin host for MNE-BIDS-Pipeline.

MNE-BIDS-Pipeline (MBP) has no plugin mechanism. This module adds one: every
installed package that declares an entry point in the group
``mne_bids_pipeline.plugins`` is loaded with :mod:`pluggy`; the processing
stages and config options its hooks return are then spliced into MBP's step
registry and into MBP's config defaults and annotations, so that MBP's own
command line, pydantic validation, caching, logging, reports and parallel
backends handle them exactly like built-in steps.

Everything here touches MBP private API on purpose (MBP keeps its internals
private, see MBP issues #303, #949 and #1003). The touched names are listed in
:data:`MBP_HOOK_POINTS` and checked by :func:`check_mbp_hook_points`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import pluggy

PROJECT_NAME = "mne_bids_pipeline"
ENTRY_POINT_GROUP = "mne_bids_pipeline.plugins"
DIST_NAME = "mne-laminar-plugin"
#: (module, attribute) pairs of MBP's private API that the host relies on.
MBP_HOOK_POINTS = (
    ("mne_bids_pipeline._config_utils", "_get_step_modules"),
    ("mne_bids_pipeline._main", "_get_step_modules"),
    ("mne_bids_pipeline._main", "main"),
    ("mne_bids_pipeline._config", "__annotations__"),
    ("mne_bids_pipeline._config_import", "_import_config"),
    ("mne_bids_pipeline._config_import", "_check_misspellings_removals"),
    ("mne_bids_pipeline._config_import", "_handle_config_error"),
    ("mne_bids_pipeline._run", "failsafe_run"),
    ("mne_bids_pipeline._run", "save_logs"),
    ("mne_bids_pipeline._run", "_prep_out_files"),
    ("mne_bids_pipeline._parallel", "parallel_func"),
    ("mne_bids_pipeline._parallel", "get_parallel_backend"),
    ("mne_bids_pipeline._report", "_open_report"),
    ("mne_bids_pipeline._config_utils", "_get_ss"),
    ("mne_bids_pipeline._config_utils", "_bids_kwargs"),
)

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class PluginError(RuntimeError):
    """A plugin could not be loaded or clashes with MBP or another plugin."""


@dataclasses.dataclass(frozen=True)
class StepGroup:
    """A processing stage (``--steps <stage>``) contributed by a plugin.

    Parameters
    ----------
    stage : str
        Name used on the command line, e.g. ``"laminar"``.
    modules : sequence of module
        Step modules in run order. Each needs ``__file__`` and
        ``main(*, config)``; write them like MBP's own step modules, in a
        folder named ``steps/<stage>/`` of an importable package.
    in_all : bool
        Whether ``--steps all`` runs this stage.
    after : str | None
        Stage after which this one runs inside ``all`` (default: at the end).
    """

    stage: str
    modules: Sequence[ModuleType]
    in_all: bool = False
    after: str | None = None


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """A config option contributed by a plugin.

    ``annotation`` is used by MBP's strict pydantic validation, ``default``
    must be a scalar, a tuple or None (MBP's rule for defaults) and ``doc`` is
    the one-line description shown by ``mne-laminar info``.
    """

    annotation: Any
    default: Any
    doc: str


class MBPPluginSpec:
    """Hook specifications of the ``mne_bids_pipeline`` plugin project."""

    @hookspec
    def mbp_register_steps(self) -> list[StepGroup]:
        """Return the processing stages this plugin adds."""

    @hookspec
    def mbp_config_options(self) -> dict[str, ConfigOption]:
        """Return the config options this plugin adds, by name."""

    @hookspec
    def mbp_patch(self, mbp_version: str) -> None:
        """Apply version-gated compatibility fixes (optional)."""


def mbp_version() -> str:
    import mne_bids_pipeline

    return mne_bids_pipeline.__version__


def _parse_version(version: str) -> tuple[int, int]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    while len(parts) < 2:
        parts.append(0)
    return tuple(parts)  # type: ignore[return-value]


def supported_mbp() -> tuple[tuple[int, int], tuple[int, int], str]:
    """The MBP series whose private API this host is written against.

    Read from this distribution's own requirement on ``mne-bids-pipeline``
    (``pyproject.toml``, the one place it is written): ``(lower, upper,
    specifier)`` with ``lower <= (major, minor) < upper``.
    """
    import re

    try:
        requires = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        raise PluginError(
            f"{DIST_NAME} is not installed (no distribution metadata): install it "
            "(pip install -e .) so the supported mne-bids-pipeline range is known"
        ) from None
    for req in requires:
        m = re.fullmatch(r"\s*mne[-_]bids[-_]pipeline\s*\(?([^;)]*)\)?\s*", req)
        if m:
            break
    else:  # pragma: no cover
        raise PluginError(f"{DIST_NAME} declares no mne-bids-pipeline requirement")
    bounds = dict(re.findall(r"(>=|<)\s*([0-9][0-9.]*)", m.group(1)))
    if set(bounds) != {">=", "<"}:  # pragma: no cover
        raise PluginError(
            f"{DIST_NAME}'s requirement {req!r} must give a range '>=X.Y,<X.Z'"
        )
    spec = f">={bounds['>=']},<{bounds['<']}"
    return _parse_version(bounds[">="]), _parse_version(bounds["<"]), spec


def check_mbp_version(version: str | None = None) -> str:
    """Raise if the installed MBP is outside the supported series."""
    version = mbp_version() if version is None else version
    lo, hi, spec = supported_mbp()
    if not lo <= _parse_version(version) < hi:
        raise PluginError(
            f"mne-bids-pipeline {version} is installed, but the MBP plugin host "
            f"supports mne-bids-pipeline{spec} only (it hooks MBP's "
            "private step registry and config). Install a supported version, e.g. "
            f"pip install 'mne-bids-pipeline{spec}'."
        )
    return version


def check_mbp_hook_points() -> None:
    """Raise if one of the MBP internals the host relies on has gone."""
    missing = []
    for mod_name, attr in MBP_HOOK_POINTS:
        mod = importlib.import_module(mod_name)
        if not hasattr(mod, attr):
            missing.append(f"{mod_name}.{attr}")
    if missing:
        raise PluginError(
            "This mne-bids-pipeline lacks internals the plugin host needs: "
            + ", ".join(missing)
        )


class PluginHost:
    """Load MBP plugins and splice their stages and options into MBP.

    Parameters
    ----------
    plugins : iterable of (name, object) | None
        Plugins to register explicitly. ``None`` (default) loads every entry
        point in the ``mne_bids_pipeline.plugins`` group.
    """

    def __init__(self, plugins: Iterable[tuple[str, Any]] | None = None) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(MBPPluginSpec)
        self.sources: dict[str, str] = {}
        if plugins is None:
            self._load_entry_points()
        else:
            for name, obj in plugins:
                self._register(name, obj, source=repr(obj))
        self._stages: dict[str, tuple[str, StepGroup]] | None = None
        self._options: dict[str, tuple[str, ConfigOption]] | None = None
        self._installed = False

    # ------------------------------------------------------------------ load
    def _load_entry_points(self) -> None:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        seen = set()
        for ep in sorted(eps, key=lambda e: e.name):
            if ep.name in seen:  # same distribution found twice on sys.path
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            where = f"{ep.value!r}" + (f" from {dist.name} {dist.version}" if dist else "")
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"MBP plugin {ep.name!r} ({where}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall that package."
                ) from exc
            self._register(ep.name, obj, source=where)

    def _register(self, name: str, obj: Any, *, source: str) -> None:
        try:
            self.pm.register(obj, name=name)
        except ValueError as exc:
            raise PluginError(f"MBP plugin {name!r} ({source}): {exc}") from exc
        self.sources[name] = source

    @property
    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    def _plugin_name(self, plugin: Any) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    def _call_per_plugin(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        out = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            name = self._plugin_name(impl.plugin)
            try:
                result = impl.function(**kwargs)
            except Exception as exc:
                where = self.sources.get(name, "")
                raise PluginError(
                    f"MBP plugin {name!r}" + (f" ({where})" if where else "")
                    + f": its hook {hook_name} raised {type(exc).__name__}: {exc}. "
                    "Fix or uninstall that package."
                ) from exc
            out.append((name, result))
        return out

    # ------------------------------------------------------- stages, options
    def stages(self) -> dict[str, tuple[str, StepGroup]]:
        """Stages by name, with the plugin that registers each."""
        if self._stages is not None:
            return self._stages
        from mne_bids_pipeline import _config_utils

        mbp_stages = set(_orig_get_step_modules(_config_utils)())
        stages: dict[str, tuple[str, StepGroup]] = {}
        for plugin, groups in self._call_per_plugin("mbp_register_steps"):
            for group in groups or ():
                if not isinstance(group, StepGroup):
                    raise PluginError(
                        f"MBP plugin {plugin!r}: mbp_register_steps must return "
                        f"StepGroup objects, got {type(group).__name__}"
                    )
                if group.stage in mbp_stages:
                    raise PluginError(
                        f"MBP plugin {plugin!r} registers stage {group.stage!r}, "
                        "which MBP already has; choose another stage name."
                    )
                if group.stage in stages:
                    raise PluginError(
                        f"MBP plugins {stages[group.stage][0]!r} and {plugin!r} both "
                        f"register stage {group.stage!r}; one of them must rename it."
                    )
                if "/" in group.stage or "," in group.stage or not group.stage:
                    raise PluginError(
                        f"MBP plugin {plugin!r}: invalid stage name {group.stage!r}"
                    )
                for mod in group.modules:
                    if not callable(getattr(mod, "main", None)):
                        raise PluginError(
                            f"MBP plugin {plugin!r}: step module {mod!r} of stage "
                            f"{group.stage!r} has no main(*, config) function."
                        )
                stages[group.stage] = (plugin, group)
        self._stages = stages
        return stages

    def options(self) -> dict[str, tuple[str, ConfigOption]]:
        """Config options by name, with the plugin that registers each."""
        if self._options is not None:
            return self._options
        from mne_bids_pipeline import _config

        mbp_names = set(_mbp_option_names(_config))
        options: dict[str, tuple[str, ConfigOption]] = {}
        for plugin, opts in self._call_per_plugin("mbp_config_options"):
            for name, opt in (opts or {}).items():
                if not isinstance(opt, ConfigOption):
                    raise PluginError(
                        f"MBP plugin {plugin!r}: option {name!r} must be a "
                        f"ConfigOption, got {type(opt).__name__}"
                    )
                if name in mbp_names:
                    raise PluginError(
                        f"MBP plugin {plugin!r} registers config option {name!r}, "
                        "which clashes with MBP's own option of that name."
                    )
                if name in options:
                    raise PluginError(
                        f"MBP plugins {options[name][0]!r} and {plugin!r} both "
                        f"register config option {name!r}."
                    )
                if name.startswith("_") or not name.isidentifier():
                    raise PluginError(
                        f"MBP plugin {plugin!r}: invalid option name {name!r}"
                    )
                if isinstance(opt.default, list | dict | set) and opt.default:
                    raise PluginError(
                        f"MBP plugin {plugin!r}: default of {name!r} must be a "
                        "scalar, tuple or None (MBP rule), not a non-empty "
                        f"{type(opt.default).__name__}"
                    )
                options[name] = (plugin, opt)
        self._options = options
        return options

    # ------------------------------------------------------------- install
    def install(self) -> None:
        """Patch MBP (in this process) so it knows every plugin's stages/options.

        Idempotent. Call before ``mne_bids_pipeline._main.main()``.
        """
        if self._installed:
            return
        check_mbp_version()
        check_mbp_hook_points()
        version = mbp_version()
        self.pm.hook.mbp_patch(mbp_version=version)
        stages = self.stages()
        options = self.options()
        _install_options({name: opt for name, (_, opt) in options.items()})
        _install_misspelling_check(sorted(options))
        _install_stages([group for _, group in stages.values()])
        self._installed = True


# --------------------------------------------------------------------------
# MBP patching helpers (module level so that they are idempotent)

_ORIG_ATTR = "__mne_laminar_orig__"


def _orig_get_step_modules(config_utils: ModuleType) -> Callable[[], dict]:
    func = config_utils._get_step_modules
    return getattr(func, _ORIG_ATTR, func)


def _mbp_option_names(config_mod: ModuleType) -> list[str]:
    added = getattr(config_mod, "__mne_laminar_added__", set())
    names = set(getattr(config_mod, "__annotations__", {}))
    names |= {n for n in vars(config_mod) if not n.startswith("_")}
    return sorted(names - set(added))


def _install_options(options: dict[str, ConfigOption]) -> None:
    from mne_bids_pipeline import _config

    added = getattr(_config, "__mne_laminar_added__", None)
    if added is None:
        added = set()
        _config.__mne_laminar_added__ = added
    annotations = _config.__annotations__
    for name, opt in options.items():
        setattr(_config, name, opt.default)
        annotations[name] = opt.annotation
        added.add(name)


def _install_misspelling_check(plugin_names: list[str]) -> None:
    """Catch near-duplicates of plugin options that MBP's own check lets through.

    MBP reports a config name close to a valid one only when that valid name
    is not set too, so ``laminar_n_layer = 5`` beside ``laminar_n_layers = 11``
    would be ignored silently. For the plugins' options, the misspelling is
    reported (as MBP does, honouring ``config_validation``) in both cases.
    """
    import difflib

    from mne_bids_pipeline import _config_import

    orig = getattr(
        _config_import._check_misspellings_removals, _ORIG_ATTR,
        _config_import._check_misspellings_removals,
    )  # fmt: skip
    names = list(plugin_names)

    def _check_misspellings_removals(*, valid_names, user_names, config_validation):
        orig(valid_names=valid_names, user_names=user_names,
             config_validation=config_validation)  # fmt: skip
        for user_name in user_names:
            if user_name in valid_names:
                continue
            match = difflib.get_close_matches(user_name, names, n=1, cutoff=0.85)
            if match and match[0] in user_names:
                _config_import._handle_config_error(
                    f"Found a variable named {user_name!r} in your custom config, "
                    f"which is not an option but is close to the option {match[0]!r}, "
                    f"also set: {user_name!r} is ignored. Remove or rename it (or "
                    "set config_validation to 'warn' or 'ignore').",
                    config_validation,
                )

    setattr(_check_misspellings_removals, _ORIG_ATTR, orig)
    _config_import._check_misspellings_removals = _check_misspellings_removals


def _install_stages(groups: list[StepGroup]) -> None:
    from mne_bids_pipeline import _config_utils, _main

    orig = _orig_get_step_modules(_config_utils)
    groups = list(groups)

    def _get_step_modules() -> dict[str, tuple[ModuleType, ...]]:
        step_modules = dict(orig())
        all_order = ["init", "preprocessing", "sensor", "source"]
        for group in groups:
            step_modules[group.stage] = tuple(group.modules)
            if group.in_all:
                if group.after in all_order:
                    all_order.insert(all_order.index(group.after) + 1, group.stage)
                else:
                    all_order.append(group.stage)
        # MBP's "all" is init + preprocessing + sensor + source, in that order
        step_modules["all"] = tuple(
            mod for stage in all_order for mod in step_modules[stage]
        )
        return step_modules

    setattr(_get_step_modules, _ORIG_ATTR, orig)
    _config_utils._get_step_modules = _get_step_modules
    _main._get_step_modules = _get_step_modules


def run_mbp(argv: Sequence[str], host: PluginHost | None = None) -> None:
    """Run MBP's own command line with every plugin installed."""
    import sys

    from mne_bids_pipeline import _main

    host = PluginHost() if host is None else host
    host.install()
    old_argv = sys.argv
    sys.argv = ["mne-laminar run", *argv]
    try:
        _main.main()
    finally:
        sys.argv = old_argv
