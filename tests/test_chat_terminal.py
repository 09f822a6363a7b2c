"""`dycoke chat` on a real terminal (a pseudo-terminal that is the process's controlling terminal, so
Ctrl-C is the terminal's own SIGINT): Ctrl-C stops an answer and comes back to one prompt, /stats
says the answer was stopped, /help lists the commands one a line, Ctrl-C at the prompt clears the line."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time

from clihelp import TINY


class Terminal:
    def __init__(self, args: list):
        self.leader, follower = pty.openpty()

        def controlling() -> None:  # the pty becomes the child's terminal: ^C is SIGINT, as for a user
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([sys.executable, "-m", "dycoke_cli", *map(str, args)], stdin=follower,
                                     stdout=follower, stderr=follower, preexec_fn=controlling,
                                     env={**os.environ, "COLUMNS": "100"})
        os.close(follower)
        self.seen = b""

    def until(self, pattern: bytes, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.seen:
            assert time.monotonic() < deadline, f"never saw {pattern!r}: {self.text()[-500:]!r}"
            if select.select([self.leader], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.leader, 65536)
                except OSError:
                    break

    def type(self, data: bytes, then: bytes) -> None:
        mark = len(self.seen)
        os.write(self.leader, data)
        deadline = time.monotonic() + 60
        while then not in self.seen[mark:]:
            assert time.monotonic() < deadline, f"never saw {then!r} after {data!r}: {self.text()[-500:]!r}"
            if select.select([self.leader], [], [], 0.1)[0]:
                self.seen += os.read(self.leader, 65536)

    def text(self, start: int = 0) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", self.seen[start:].decode("utf-8", "replace")).replace("\r", "")


def test_ctrl_c_stops_an_answer_back_to_one_prompt_and_stats_say_so(clip, tiny):
    term = Terminal(["chat", clip, *TINY[:-2], "--max-new-tokens", "2000"])
    try:
        term.until(b"you> ")
        mark = len(term.seen)
        os.write(term.leader, b"Describe it.\r")
        term.until(b"Describe it.\r\n")
        time.sleep(0.3)  # some of the answer streams
        term.type(b"\x03", b"you> ")
        after = term.text(mark)
        assert after.count("note: answer stopped; the turn is forgotten") == 1
        assert after.rstrip().endswith("note: answer stopped; the turn is forgotten\nyou>")  # one prompt, at once
        mark = len(term.seen)
        term.type(b"/stats\r", b"you> ")
        assert term.text(mark) == ("/stats\nnote: the last answer was stopped (Ctrl-C) before it finished: it has no "
                                   "stats\nyou> ")
        mark = len(term.seen)
        term.type(b"/help\r", b"you> ")
        assert term.text(mark) == ("/help\ncommands\n/help        this list\n"
                                   "/reset       forget the conversation (the video stays encoded)\n"
                                   "/stats       the last answer's stats\n/bye, /quit  leave (or Ctrl-D)\n"
                                   "Ctrl-C       stops an answer; at the prompt, clears the line\nyou> ")
        mark = len(term.seen)
        term.type(b"half a line\x03", b"you> ")  # clears the line, the chat goes on
        term.type(b"/bye\r", b"/bye")
        assert term.proc.wait(timeout=60) == 0
        assert "answer" not in term.text(mark)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.leader)
