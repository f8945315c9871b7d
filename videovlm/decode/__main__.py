"""``python -m videovlm.decode``: the decoding child process (see :mod:`.isolation`)."""

import videovlm.decode._av  # noqa: F401  (the default backend's PyAV, loaded while the parent probes)
from videovlm.decode import _call, get_backend
from videovlm.isolation import child_main

child_main(lambda name, info, refs, on_frame: _call(get_backend(name), info, refs, on_frame))
