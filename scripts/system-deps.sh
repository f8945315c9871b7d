#!/usr/bin/env bash
# System packages the test suite needs beyond pip: FFmpeg's shared libraries (torchcodec loads
# them at import) and command-line tools (ffprobe/ffmpeg: the tests' external oracle), and
# Chromium (the HTML report is rendered in a real headless browser), and espeak-ng (the speech
# sample's voice).
# Installs what is missing when it can (root + apt-get); otherwise says what to install.
set -u
need=()
{ ldconfig -p 2>/dev/null | grep -q 'libavdevice\.so' && command -v ffprobe >/dev/null 2>&1; } || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
# espeak-ng only rebuilds samples/speech.mp4 (scripts/make_speech_sample.py); the tests read the file
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "system-deps: please install: ${need[*]} (torchcodec needs FFmpeg's libraries; the HTML test needs chromium)" >&2
fi
exit 0
