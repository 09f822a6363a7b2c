"""`dycoke chat`: commands and turns, driven through the same loop a terminal user gets."""

from __future__ import annotations

from dycoke_cli.commands.chat import run_chat
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling

FOUR = Generation(max_new_tokens=4, min_new_tokens=4)


def scripted(lines):
    feed = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return read


def test_turns_commands_and_end_of_input(tiny, clip, capsys):
    video = encode_video(tiny, clip, Sampling(frames=4))
    session = Session(tiny, video, parse_spec("dycoke"))
    run_chat(session, FOUR, read=scripted(["/stats", "What happens?", "/stats", "/nope", "And then?", "/reset"]))
    out, err = capsys.readouterr()
    reference = Session(tiny, video, parse_spec("dycoke"))
    first = reference.chat("What happens?", FOUR).text
    second = reference.chat("And then?", FOUR).text
    assert out == f"{first}\n{second}\n"
    assert "no answer yet" in err and "dycoke stats" in err and "unknown command /nope" in err
    assert "conversation cleared" in err
    assert session.history == []  # /reset came last


def test_quit_stops_before_later_lines(tiny, clip, capsys):
    session = Session(tiny, encode_video(tiny, clip, Sampling(frames=4)), parse_spec("dycoke"))
    run_chat(session, FOUR, read=scripted(["/quit", "never asked"]))
    assert capsys.readouterr().out == ""
    assert session.history == []
