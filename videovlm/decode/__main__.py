"""``python -m videovlm.decode``: the decoding child process (see :mod:`.isolation`)."""

from videovlm.decode import _call, get_backend
from videovlm.decode.isolation import child_main

child_main(lambda name, info, refs, on_frame: _call(get_backend(name), info, refs, on_frame))
