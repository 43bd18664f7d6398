"""steps/phases.py: the process's phases add up, start-up counts from the process's start, and
the quick exit keeps every byte of output and the exit code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from steps import phases, store_names
from tests.conftest import PROJECT_DIR


def test_each_phase_adds_up_and_a_block_resumes_the_phase_before_it():
    clock = phases.Phases()
    clock.enter(store_names.LOAD_PHASE)
    time.sleep(0.02)
    with clock.during(store_names.PICTURES_PHASE):
        time.sleep(0.02)
    time.sleep(0.02)  # loading again
    clock.enter(store_names.WRITE_PHASE)
    spent = clock.durations()
    assert 0.04 <= spent[store_names.LOAD_PHASE] < 1, spent
    assert 0.02 <= spent[store_names.PICTURES_PHASE] < 1, spent
    assert set(spent) == {store_names.LOAD_PHASE, store_names.PICTURES_PHASE, store_names.WRITE_PHASE}


def test_start_up_counts_from_the_process_s_start():
    code = textwrap.dedent("""
        import time
        time.sleep(0.3)  # before anything of the project is imported
        from steps import phases
        phases.body_begins()
        print(phases.PHASES.durations()["startup"])
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 0.3 <= float(done.stdout) < 10


def test_the_quick_exit_keeps_the_output_and_the_exit_code():
    code = textwrap.dedent("""
        import sys
        from steps import phases
        sys.stdout.write("x" * 1_000_000)
        sys.stderr.write("last line")
        phases.quick_exit()
        sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "x" * 1_000_000 and done.stderr == "last line"
