"""dycoke: answer questions about videos with a local video LLM, made fast by DyCoke compression."""

__version__ = "0.1.0"
