"""``python -m mne_laminar_plugin`` is ``mne-laminar``."""

import sys

from .cli import main

sys.exit(main())
