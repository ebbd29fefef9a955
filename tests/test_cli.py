import subprocess
import sys

from sslzoo.cli import build_parser, main


def test_help_lists_commands_and_exits_zero(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "sslzoo" in text
    assert main([]) == 2  # no command: help and a non-zero exit


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "sslzoo", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sslzoo ")
