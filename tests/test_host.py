"""The MBP plugin host: registration, option validation, clashes, versions."""

from __future__ import annotations

import difflib
import importlib
import sys
import types
from pathlib import Path

import pytest

from mne_laminar_plugin.pipeline import host as host_mod
from mne_laminar_plugin.pipeline.host import (
    ConfigOption,
    PluginError,
    PluginHost,
    StepGroup,
    check_mbp_hook_points,
    check_mbp_version,
    hookimpl,
)
from mne_laminar_plugin.pipeline.options import OPTIONS


@pytest.fixture
def restore_mbp():
    """Undo the host's MBP patches after a test."""
    from mne_bids_pipeline import _config, _config_import, _config_utils, _main

    orig_get = host_mod._orig_get_step_modules(_config_utils)
    check = _config_import._check_misspellings_removals
    orig_check = getattr(check, host_mod._ORIG_ATTR, check)
    ann = dict(_config.__annotations__)
    names = set(vars(_config))
    yield
    _config_import._check_misspellings_removals = orig_check
    _config_utils._get_step_modules = orig_get
    _main._get_step_modules = orig_get
    _config.__annotations__.clear()
    _config.__annotations__.update(ann)
    for name in set(vars(_config)) - names:
        delattr(_config, name)


def _stage_names(modules):
    return [Path(m.__file__).parent.name + "/" + Path(m.__file__).stem for m in modules]


def test_entry_point_registers_laminar(restore_mbp):
    from mne_bids_pipeline import _config, _config_utils, _main

    host = PluginHost()
    assert "laminar" in host.plugin_names
    stages = host.stages()
    assert "laminar" in stages
    plugin, group = stages["laminar"]
    assert plugin == "laminar" and group.in_all and group.after == "source"
    names = [Path(m.__file__).stem for m in group.modules]
    assert names == sorted(names) and len(names) >= 3
    assert names[:3] == ["_01_layer_surfaces", "_02_leadfield", "_03_predictors"]
    host.install()
    host.install()  # idempotent
    for getter in (_config_utils._get_step_modules, _main._get_step_modules):
        mods = getter()
        assert mods["laminar"] == tuple(group.modules)
        all_names = _stage_names(mods["all"])
        source = _stage_names(mods["source"])
        lam = _stage_names(mods["laminar"])
        # laminar runs right after MBP's source stage, once
        i_src = all_names.index(source[-1])
        assert all_names[i_src + 1 : i_src + 1 + len(lam)] == lam
        assert len(all_names) == len(set(all_names))
        assert "freesurfer" in mods and all_names[0].startswith("init/")
    for name, opt in OPTIONS.items():
        assert getattr(_config, name) == opt.default
        assert _config.__annotations__[name] is opt.annotation


def test_option_names_do_not_trip_misspelling_check():
    """Even without the host, no option reads as a misspelled MBP option."""
    from mne_bids_pipeline import _config

    valid = [n for n in dir(_config) if not n.startswith("_") and n not in OPTIONS]
    for name in OPTIONS:
        assert difflib.get_close_matches(name, valid, n=1) == [], name
        assert name.startswith("laminar_")


NON_DEFAULT = dict(
    laminar_enable=False,
    laminar_deriv_name="lam",
    laminar_offline_mode=True,
    laminar_n_layers=3,
    laminar_depth_method="equivolume",
    laminar_column_spacing="ico4",
    laminar_lameg_layers="{subjects_dir}/{subject}/surf/laminar",
    laminar_orientation="surface_normal",
    laminar_cortex_mask="thickness",
    laminar_min_thickness=1.0,
    laminar_leadfield_mode="random",
    laminar_leadfield_dir="/data/lf",
    laminar_orientation_type="free",
    laminar_random_seed=3,
    laminar_skull_margin=2.0,
    laminar_forward_engine="mne",
    laminar_forward_float32=True,
    laminar_scalp_mesh="head",
    laminar_rois=["label/lh.demo_roi.label", "aparc:lh.precentral"],
    laminar_score_weights={"thickness": 2.0},
    laminar_predictors_whiten=False,
    laminar_predictors_ch_type="grad",
    laminar_group_template="fsaverage5",
    laminar_layer_comparison=False,
    laminar_comparison_method="ebb",
    laminar_comparison_woi=(0.05, 0.15),
    laminar_patch_fwhm=8.0,
    laminar_temporal_modes=2,
    laminar_sliding_windows=(40.0, None),
    laminar_comparison_conditions=["stim"],
)


def test_config_with_every_option(tmp_path, restore_mbp, monkeypatch):
    from mne_bids_pipeline import _logging
    from mne_bids_pipeline._config_import import _import_config

    missing = set(OPTIONS) - set(NON_DEFAULT)
    assert not missing, f"test must set every option, missing {missing}"
    warnings = []
    monkeypatch.setattr(_logging.logger, "warning", lambda *a, **k: warnings.append((a, k)))
    PluginHost().install()
    lines = [f"{k} = {v!r}" for k, v in NON_DEFAULT.items()]
    cfg_file = tmp_path / "config.py"
    cfg_file.write_text(
        f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n"
        "config_validation = 'warn'\n" + "\n".join(lines) + "\n"
    )
    cfg = _import_config(config_path=cfg_file, add_all_tasks=False)
    assert warnings == []
    for name, value in NON_DEFAULT.items():
        assert getattr(cfg, name) == value, name


def test_option_validation_errors(tmp_path, restore_mbp):
    from mne_bids_pipeline._config_import import _import_config

    PluginHost().install()
    base = f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n"
    bad = {
        "laminar_n_layers = '5'": "laminar_n_layers",  # strict: no str for int
        "laminar_n_layers = 1": "laminar_n_layers",  # >= 2
        "laminar_depth_method = 'equal'": "laminar_depth_method",
        "laminar_n_layer = 3": "did you mean 'laminar_n_layers'",
        "laminar_patch_fwhm = 0.0": "laminar_patch_fwhm",  # > 0
        "laminar_comparison_method = 'lcmv'": "laminar_comparison_method",
        "laminar_sliding_windows = (-50.0, 10.0)": "laminar_sliding_windows",
    }
    for i, (line, expected) in enumerate(bad.items()):
        cfg_file = tmp_path / f"bad{i}.py"
        cfg_file.write_text(base + line + "\n")
        with pytest.raises(ValueError, match=expected):
            _import_config(config_path=cfg_file, add_all_tasks=False)


def test_unregistered_option_is_dropped_by_plain_mbp(tmp_path, restore_mbp):
    """Without the host MBP silently drops laminar_* names: why `mne-laminar run`."""
    from mne_bids_pipeline._config_import import _import_config

    cfg_file = tmp_path / "config.py"
    cfg_file.write_text(
        f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n"
        "laminar_n_layers = 3\nconfig_validation = 'ignore'\n"
    )
    cfg = _import_config(config_path=cfg_file, add_all_tasks=False)
    assert not hasattr(cfg, "laminar_n_layers")


# ----------------------------------------------------------------- clashes
def _plugin(**hooks):
    ns = types.SimpleNamespace()
    for name, func in hooks.items():
        setattr(ns, name, hookimpl(func))
    return ns


def _step_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__file__ = f"/x/steps/{name}/_01_{name}.py"
    mod.main = lambda *, config: None
    return mod


def test_stage_clash_with_mbp():
    p = _plugin(mbp_register_steps=lambda: [StepGroup("source", [_step_module("s")])])
    with pytest.raises(PluginError, match=r"'bad'.*stage 'source'.*MBP already has"):
        PluginHost(plugins=[("bad", p)]).stages()


def test_stage_clash_between_plugins():
    a = _plugin(mbp_register_steps=lambda: [StepGroup("extra", [_step_module("a")])])
    b = _plugin(mbp_register_steps=lambda: [StepGroup("extra", [_step_module("b")])])
    with pytest.raises(PluginError, match=r"'one' and 'two' both register stage 'extra'"):
        PluginHost(plugins=[("one", a), ("two", b)]).stages()


def test_option_clash_with_mbp_and_plugins():
    p = _plugin(mbp_config_options=lambda: {"spacing": ConfigOption(str, "oct6", "x")})
    with pytest.raises(PluginError, match=r"'bad'.*'spacing'.*clashes with MBP"):
        PluginHost(plugins=[("bad", p)]).options()
    a = _plugin(mbp_config_options=lambda: {"x_opt": ConfigOption(int, 1, "x")})
    b = _plugin(mbp_config_options=lambda: {"x_opt": ConfigOption(int, 2, "x")})
    with pytest.raises(PluginError, match=r"'one' and 'two' both register config option 'x_opt'"):
        PluginHost(plugins=[("one", a), ("two", b)]).options()
    c = _plugin(mbp_config_options=lambda: {"y_opt": ConfigOption(list, [1], "x")})
    with pytest.raises(PluginError, match=r"default of 'y_opt' must be a scalar"):
        PluginHost(plugins=[("c", c)]).options()


def test_step_module_without_main():
    mod = types.ModuleType("nomain")
    mod.__file__ = "/x/steps/s/_01_nomain.py"
    p = _plugin(mbp_register_steps=lambda: [StepGroup("s", [mod])])
    with pytest.raises(PluginError, match=r"has no main\(\*, config\)"):
        PluginHost(plugins=[("p", p)]).stages()


def _fake_distribution(site: Path, dist: str, ep_name: str, target: str) -> None:
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[mne_bids_pipeline.plugins]\n{ep_name} = {target}\n"
    )


def test_plugin_failing_to_import(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_mbp_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    _fake_distribution(site, "broken-mbp-plugin", "broken", "broken_mbp_plugin")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.raises(PluginError, match=r"plugin 'broken'.*broken-mbp-plugin.*failed to import.*needs libfoo"):
        PluginHost()
    sys.modules.pop("broken_mbp_plugin", None)


# ---------------------------------------------------------------- versions
@pytest.mark.parametrize("version", ["1.9.2", "1.11.0", "2.0.0", "1.2"])
def test_unsupported_mbp_version(version):
    with pytest.raises(PluginError, match=r"mne-bids-pipeline>=1.10,<1.11"):
        check_mbp_version(version)


def test_supported_mbp_range_is_the_pyproject_requirement():
    """One source: the host's range is pyproject's mne-bids-pipeline requirement."""
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    from mne_laminar_plugin.pipeline.host import supported_mbp

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (req,) = [d for d in deps if d.startswith("mne-bids-pipeline")]
    lo, hi, spec = supported_mbp()
    assert sorted(spec.split(",")) == sorted(req.removeprefix("mne-bids-pipeline").split(","))
    lower = re.search(r">=([0-9.]+)", req).group(1)
    upper = re.search(r"<([0-9.]+)", req).group(1)
    assert lo == tuple(int(x) for x in lower.split(".")[:2])
    assert hi == tuple(int(x) for x in upper.split(".")[:2])


def test_supported_mbp_version_and_hook_points():
    assert check_mbp_version("1.10.1") == "1.10.1"
    assert check_mbp_version("1.10.2.dev3+g123") == "1.10.2.dev3+g123"
    check_mbp_version()  # the installed MBP
    check_mbp_hook_points()


def test_install_refuses_unsupported_mbp(monkeypatch, restore_mbp):
    import mne_bids_pipeline

    monkeypatch.setattr(mne_bids_pipeline, "__version__", "1.12.0")
    with pytest.raises(PluginError, match="supports mne-bids-pipeline>=1.10,<1.11"):
        PluginHost().install()


def test_example_laminar_options_config_is_valid(tmp_path, restore_mbp):
    from mne_bids_pipeline._config_import import _import_config

    repo = Path(__file__).resolve().parents[1]
    snippet = (repo / "example_configs" / "laminar_options.py").read_text()
    cfg_file = tmp_path / "config.py"
    cfg_file.write_text(
        f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n"
        + snippet
    )
    PluginHost().install()
    cfg = _import_config(config_path=cfg_file, add_all_tasks=False)
    assert cfg.laminar_rois == ("aparc:lh.precentral", "label/lh.my_roi.label")
