"""dycoke: answer questions about videos with a local video LLM, made fast by token compression.

The Python API, for scripts and notebooks (the names load lazily, so `import dycoke_cli` is cheap):

    from dycoke_cli import Generation, Sampling, Session, encode_video, load_model

    lm = load_model("random:tiny", device="cpu")                 # a Hub id, a folder, builtin:/random: spec
    video = encode_video(lm, "clip.mp4", Sampling(frames=8))    # decoded and encoded once
    session = Session(lm, video, "dycoke:k=0.7")                 # any --compress spec
    answer = session.ask("What happens?", Generation(max_new_tokens=32))
    answer.text, answer.stats.to_dict()                          # the text and every figure of --json
"""

__version__ = "0.1.0"

_API = {
    "load_model": "dycoke_cli.models.loading",
    "encode_video": "dycoke_cli.engine",
    "Session": "dycoke_cli.engine",
    "Answer": "dycoke_cli.engine",
    "Sampling": "dycoke_cli.video.frames",
    "Generation": "dycoke_cli.settings",
    "parse_spec": "dycoke_cli.compress.spec",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
