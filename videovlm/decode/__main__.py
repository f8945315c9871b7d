"""``python -m videovlm.decode``: the decoding child process (see :mod:`videovlm.isolation`).

PyAV is imported before the child says it is ready: every job needs it (the probe, the default
backend), and the parent starts the child early (``warm_up``) so that this overlaps its own work.
"""

import av  # noqa: F401

from videovlm.decode import _call, get_backend
from videovlm.isolation import child_main

child_main(lambda name, info, refs, on_frame: _call(get_backend(name), info, refs, on_frame))
