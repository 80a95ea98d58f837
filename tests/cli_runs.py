"""Running the command line in-process from a test."""

from __future__ import annotations

from spc_fast import cli


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``spc-fast ARGV`` in this process: (exit status, stdout, stderr); arguments may be paths or numbers."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
