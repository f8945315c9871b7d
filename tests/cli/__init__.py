"""Tests of the `videovlm` command line, one file per command (or pair of related commands)."""
