"""Progress: plain lines when stderr is not a terminal (logs), live bars on a real terminal (a pty)."""
import os
import pty
import select

from slimdeploy.progress import LiveSay, progress, stderr_say


def test_off_a_terminal_progress_is_plain_lines_at_the_callers_pace(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        say = stderr_say(stream)
        assert not isinstance(say, LiveSay)
        say("starting")
        for i in range(1, 11):
            progress(say, "training", i, 10, f"step {i}/10" if i % 5 == 0 else None, note=f"loss {1 / i:.2f}")
    assert (tmp_path / "log").read_text() == "starting\nstep 5/10\nstep 10/10\n"


def test_compress_logs_plain_lines_when_stderr_is_a_pipe(compressed_from_config):
    err = compressed_from_config.stderr
    assert "\r" not in err and "\x1b" not in err and "it/s" not in err
    assert "[####################] 10/10 configurations (" in err
    assert "[####################] 5/5 uniform x" in err


def test_on_a_terminal_each_step_is_a_live_bar_with_lines_above_it():
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            say = stderr_say(stream)
            assert isinstance(say, LiveSay)
            say("profiling")
            for i in range(1, 5):
                progress(say, "configurations", i, 4, f"plain {i}", note=f"{i} measured")
            say("done")
            stream.flush()
        written = b""
        while b"done" not in written and select.select([leader], [], [], 10)[0]:
            written += os.read(leader, 65536)
    finally:
        os.close(leader)
        os.close(follower)
    text = written.decode()
    assert "configurations: 100%" in text and "4/4" in text and "4 measured" in text and "\r" in text
    assert "plain" not in text and text.index("profiling") < text.index("configurations") < text.index("done")
