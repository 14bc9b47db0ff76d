"""A command's output is bounded while it runs: `[[commands]]`, command services and pm2 share
one reader (backends.actions.command.collect) that keeps at most `max_output` bytes of each
stream and drains the rest, so a chatty program neither blocks on a full pipe nor fills memory."""

from __future__ import annotations

import resource
import sys

from backends.actions.command import CommandTemplate


async def test_a_program_writing_64_mb_is_read_to_its_end_keeping_1_mb():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    script = "import sys; b = b'x' * (1 << 20); [sys.stdout.buffer.write(b) for _ in range(64)]; " \
             "sys.stderr.write('done'); sys.exit(4)"
    t = CommandTemplate("chatty", [sys.executable, "-c", script], timeout=60, max_output=1 << 20)
    res = await t.run()
    assert res.exit_code == 4 and not res.timed_out  # it ran to its end: the pipe never blocked it
    assert res.truncated and len(res.stdout) == 1 << 20 and res.stderr == "done"
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 32 * 1024, f"the reader held {grown_kb} KB (64 MB written)"


async def test_stdin_is_fed_and_a_timeout_keeps_what_was_written_before_it():
    t = CommandTemplate("cat", ["cat"], timeout=10)
    res = await t.run(stdin=b"hello\n")
    assert res.exit_code == 0 and res.stdout == "hello\n" and not res.truncated
    slow = CommandTemplate("slow", ["sh", "-c", "echo started; exec sleep 30"], timeout=0.5)
    res = await slow.run()
    assert res.timed_out and res.exit_code is None and res.stdout == "started\n"
