"""
.. _tut-plugins:

07. Adding the plugin to an MBP config, and writing a plugin stage of your own
==============================================================================

MNE-BIDS-Pipeline (MBP) has no plugin mechanism of its own; this package's
plugin host adds one. Any installed package that declares an entry point in the
group ``mne_bids_pipeline.plugins`` can add stages and config options, and
``mne-laminar run`` runs them inside MBP's own ``main()``, with MBP's caching,
logging, parallel backends and reports.

Part 1 adds the laminar stage to an existing MBP config; part 2 writes a tiny
third-party stage and runs it beside ``laminar`` on the demo dataset.
"""

# %%
# Part 1: the laminar stage in an existing config
# -----------------------------------------------
# Nothing in an existing config has to change: install this package next to
# ``mne-bids-pipeline`` 1.10 and run the config through ``mne-laminar run``,
# which takes every ``mne_bids_pipeline`` argument unchanged::
#
#     mne-laminar run config.py --steps all           # MBP's stages, then laminar
#     mne-laminar run config.py --steps laminar --subject 01
#
# The ``laminar_*`` options are all optional; a few a user typically sets:
import sys
import tempfile
import textwrap
from pathlib import Path

from mne_laminar_plugin import PluginHost, get_data_path
from mne_laminar_plugin.cli import main as mne_laminar

example = """
laminar_n_layers = 11                 # pial (0) ... white (10)
laminar_column_spacing = "oct6"
laminar_rois = ("aparc:lh.precentral",)
"""
host = PluginHost()  # every installed plugin, found through entry points
options = host.options()
for line in example.strip().splitlines():
    name = line.split("=")[0].strip()
    print(f"{name}: {options[name][1].doc}")

# %%
# The host lists the stages every installed plugin adds (``mne-laminar info``
# prints the same):
for stage, (plugin, group) in host.stages().items():
    print(stage, "from plugin", plugin, "after", group.after,
          [m.__name__.rsplit(".", 1)[-1] for m in group.modules])

# %%
# Part 2: a plugin stage of your own
# ----------------------------------
# A package ``hello_mbp_plugin`` with a stage ``hello`` that counts each
# subject's clean epochs. Its ``plugin.py`` implements two hooks of the host;
# its step module is written like MBP's own steps. Here we write the package to
# a temporary folder; a real one declares in its ``pyproject.toml``::
#
#     [project.entry-points."mne_bids_pipeline.plugins"]
#     hello = "hello_mbp_plugin.plugin"
site = Path(tempfile.mkdtemp())
pkg = site / "hello_mbp_plugin"
(pkg / "steps" / "hello").mkdir(parents=True)
(pkg / "__init__.py").write_text("")
(pkg / "steps" / "__init__.py").write_text("")
(pkg / "plugin.py").write_text(textwrap.dedent('''
    from mne_laminar_plugin import ConfigOption, StepGroup, hookimpl


    @hookimpl
    def mbp_register_steps():
        from .steps import hello

        return [StepGroup(stage="hello", modules=hello._STEPS, in_all=True, after="sensor")]


    @hookimpl
    def mbp_config_options():
        return {"hello_greeting": ConfigOption(str, "hi", "Word written after the count.")}
'''))
(pkg / "steps" / "hello" / "__init__.py").write_text(textwrap.dedent('''
    """Hello: a tiny example stage."""
    from . import _01_count_epochs

    _STEPS = (_01_count_epochs,)
'''))
(pkg / "steps" / "hello" / "_01_count_epochs.py").write_text(textwrap.dedent('''
    """Count epochs.

    Writes the number of clean epochs of every subject to a text file.
    """

    from types import SimpleNamespace

    import mne
    from mne_bids import BIDSPath
    from mne_bids_pipeline._config_utils import _bids_kwargs, _get_ss
    from mne_bids_pipeline._logging import gen_log_kwargs, logger
    from mne_bids_pipeline._parallel import get_parallel_backend, parallel_func
    from mne_bids_pipeline._run import _prep_out_files, failsafe_run, save_logs


    def _epochs_path(cfg, subject, session):
        return BIDSPath(
            subject=subject, session=session, task=cfg.task, processing="clean",
            suffix="epo", extension=".fif", datatype=cfg.datatype,
            root=cfg.deriv_root, check=False,
        )


    def get_input_fnames_count(*, cfg, subject, session):
        return dict(epochs=_epochs_path(cfg, subject, session))


    @failsafe_run(get_input_fnames=get_input_fnames_count)
    def count(*, cfg, exec_params, subject, session, in_files):
        epochs = mne.read_epochs(in_files.pop("epochs"), verbose="error")
        assert not in_files
        out = _epochs_path(cfg, subject, session).update(
            processing=None, suffix="hello", extension=".txt"
        )
        out.fpath.write_text(f"{len(epochs)} {cfg.hello_greeting}\\n")
        logger.info(**gen_log_kwargs(message=f"counted {len(epochs)} epochs"))
        return _prep_out_files(exec_params=exec_params, out_files=dict(hello=out))


    def get_config(*, config, subject, session):
        return SimpleNamespace(
            task=config.task,
            hello_greeting=config.hello_greeting,
            **_bids_kwargs(config=config),
        )


    def main(*, config):
        ss = _get_ss(config=config)
        with get_parallel_backend(config.exec_params):
            parallel, run_func = parallel_func(
                count, exec_params=config.exec_params, n_iter=len(ss)
            )
            logs = parallel(
                run_func(
                    cfg=get_config(config=config, subject=s, session=ses),
                    exec_params=config.exec_params, subject=s, session=ses,
                )
                for s, ses in ss
            )
        save_logs(config=config, logs=logs)
'''))

# %%
# Register it beside the installed plugins and run its stage on the demo. (An
# installed package needs no registering: ``mne-laminar run`` finds its entry
# point; here we hand the host the module because the package is not
# installed.)
import importlib

from mne_laminar_plugin.pipeline.host import run_mbp

demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
sys.path.insert(0, str(site))  # where the (not installed) package lies
importlib.invalidate_caches()
hello = importlib.import_module("hello_mbp_plugin.plugin")
installed = [(name, host.pm.get_plugin(name)) for name in host.plugin_names]
host2 = PluginHost(plugins=[*installed, ("hello", hello)])
print(sorted(host2.stages()))
run_mbp([str(demo_dir / "demo_config.py"), "--steps", "hello"], host=host2)
out = sorted((demo_dir / "bids" / "derivatives" / "mne-bids-pipeline").rglob("*_hello.txt"))
print(out[0].name, "->", out[0].read_text().strip())
