"""The fuzz harness's per-input deadline (tests/_fuzz.py): a reader stuck inside C code, where
no signal handler runs, ends the process with its stack printed on the terminal, past
pytest's capture (before, such a hang ended a 20-minute fuzz run with no output at all)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STUCK_IN_C = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import pytest
    import _fuzz

    @pytest.fixture(autouse=True)
    def _stream(request):
        _fuzz.HANG_STREAM = _fuzz.terminal_stderr(request.config)
        yield

    def test_stuck_in_c():
        with _fuzz.deadline(0.25):
            sum(range(10**12))  # one C call: the SIGALRM handler cannot run inside it
""")


def test_a_hang_inside_c_code_is_reported_on_the_terminal(tmp_path):
    test = tmp_path / "test_stuck.py"
    test.write_text(STUCK_IN_C.format(tests=str(Path(__file__).parent)))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode != 0
    assert "Timeout (0:00:01)!" in run.stderr, (run.stdout, run.stderr)
    assert "in test_stuck_in_c" in run.stderr, run.stderr
