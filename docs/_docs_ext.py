"""Local Sphinx extension: generate the option reference from the one option table.

The option table (``mne_laminar_plugin`` options module, the same source as
``mne-laminar info`` and the README table) is rendered to
``generated/options.md`` each time the docs are built, so it is never written
twice.
"""

from __future__ import annotations

from pathlib import Path


def _write_options(app) -> None:
    from mne_laminar_plugin.cli import options_markdown

    out = Path(app.srcdir) / "generated" / "options.md"
    out.parent.mkdir(exist_ok=True)
    text = (
        "# Option reference\n\n"
        "Every `laminar_*` option of the MBP config file, generated from the "
        "option table (the same table `mne-laminar info` prints). All are "
        "optional.\n\n" + options_markdown() + "\n"
    )
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


def setup(app):
    app.connect("builder-inited", _write_options)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
