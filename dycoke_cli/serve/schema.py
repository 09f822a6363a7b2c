"""An OpenAI chat-completions body -> a ChatRequest, checked before any file is opened or any work queued.

The OpenAI generation fields map onto the command line's flags (`max_tokens` / `max_completion_tokens`
-> --max-new-tokens, `temperature`, `top_p`, `seed`) and the `dycoke` object onto its sampling and
compression flags (`compress`, `budget`, `frames`, `fps`, `max_frames`, `start`, `end`). Every value is
checked by the declarations the command line parses its flags with, then the settings are resolved by
the same functions (`CompressFlags.spec`, `SamplingFlags.request`), so a setting is refused with exactly
the message `dycoke ask` prints for the same flag. JSON types are checked first: a JSON API takes
numbers as numbers, not as the strings a shell passes.

Defaults come from the serve command line, merged as a user would expect: a request's `compress`
replaces the server's compression setting whole (its budget too); a request's `budget` alone applies
to the server's method; `frames` or `fps` replaces the server's frame count, rate and cap together;
`max_frames`, `start` and `end` replace only themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from dycoke_cli.commands.options import CompressFlags, GenerationFlags, SamplingFlags, checked_values
from dycoke_cli.serve.api_errors import ApiError

NUMBER, INTEGER, TEXT, FLAG = "a number", "an integer", "a string", "true or false"
SETTINGS = {"compress": (TEXT,), "budget": (TEXT, NUMBER), "frames": (INTEGER,), "fps": (NUMBER,),
            "max_frames": (INTEGER,), "start": (TEXT, NUMBER), "end": (TEXT, NUMBER)}
# A request's frames or fps replaces the server's count, rate and cap; its compress, the server's
# compression setting whole.
SAMPLING_RESET = (("frames", "fps"), {"frames": None, "fps": None, "max_frames": None})
COMPRESS_RESET = (("compress",), {"compress": None, "budget": None, "no_compress": False})
MAX_STOPS = 4  # as OpenAI allows


@dataclass(frozen=True)
class Defaults:
    """What a request does not say: the serve command line's model and flags."""

    model: str
    sampling: SamplingFlags
    compress: CompressFlags
    gen: GenerationFlags


@dataclass(frozen=True)
class ChatRequest:
    """One request, checked: the conversation about one video and every setting resolved."""

    model: str
    video_url: str
    system: str | None
    history: tuple[tuple[str, str], ...]  # earlier (question, answer) turns
    question: str
    generation: object  # settings.Generation
    sampling: object  # video.SamplingRequest
    compression: object  # compress.spec.CompressionSpec
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False

    @property
    def turns(self) -> list[tuple[str, str | None]]:
        return [*self.history, (self.question, None)]


def parse_json(body: bytes) -> dict:
    """The body as a JSON object, or a 400 that says why not."""
    try:
        obj = json.loads(body.decode("utf-8"))  # JSON on the wire is UTF-8 (RFC 8259), never guessed
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text", "invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                            f"{exc.colno})", "invalid_json") from None
    except (RecursionError, ValueError) as exc:  # nesting past the parser's depth, a 5,000-digit number
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise ApiError(400, f"the request body is not usable JSON ({reason})", "invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(obj)}", "invalid_json")
    return obj


def chat_request(obj: dict, defaults: Defaults) -> ChatRequest:
    """Check a chat-completions body and resolve its settings against the server's defaults."""
    from dycoke_cli.commands.questions import checked_question

    model = _typed(obj, "model", (TEXT,))
    if model is not None and model != defaults.model:
        raise ApiError(404, f"model '{model}' is not served here; this server serves '{defaults.model}'",
                       "model_not_found")
    _refuse_unsupported(obj)
    system, video_url, turns = _conversation(obj.get("messages"))
    turns = [(checked_question(q), a) for q, a in turns]
    flags = _generation_values(obj)
    settings = _typed(obj, "dycoke", ("an object",)) or {}
    for key in settings:
        if key not in SETTINGS:
            raise ApiError(400, f"unknown setting '{key}' in 'dycoke'; settings: {', '.join(SETTINGS)}",
                           "invalid_value")
    for key, kinds in SETTINGS.items():
        _typed(settings, key, kinds, "dycoke.")
    values = checked_values({**flags, **{k: v for k, v in settings.items() if v is not None}},
                            sampling=SamplingFlags, compress=CompressFlags, gen=GenerationFlags)
    generation = replace(_merged(defaults.gen, values).generation(), min_new_tokens=_min_tokens(obj, values))
    stream_options = _typed(obj, "stream_options", ("an object",)) or {}
    return ChatRequest(
        model=defaults.model, video_url=video_url,
        system=system if system is not None else defaults.gen.system,
        history=tuple((q, a) for q, a in turns[:-1]), question=turns[-1][0], generation=generation,
        sampling=_merged(defaults.sampling, values, *SAMPLING_RESET).request(),
        compression=_merged(defaults.compress, values, *COMPRESS_RESET).spec(),
        stop=_stops(obj), stream=bool(_typed(obj, "stream", (FLAG,))),
        include_usage=bool(_typed(stream_options, "include_usage", (FLAG,), "stream_options.")),
    )


def _merged(flags, values: dict, trigger: tuple[str, ...] = (), reset: dict | None = None):
    """A flag group with the request's values over the server's; when the request gives a key of
    `trigger`, the server's values named in `reset` are dropped first."""
    if any(key in values for key in trigger):
        flags = replace(flags, **reset)
    return replace(flags, **{f: values[f] for f in vars(flags) if f in values})


def _generation_values(obj: dict) -> dict:
    values = {}
    tokens = _typed(obj, "max_completion_tokens", (INTEGER,))
    tokens = _typed(obj, "max_tokens", (INTEGER,)) if tokens is None else tokens
    if tokens is not None:
        values["max_new_tokens"] = tokens
    for key, kinds in (("temperature", (NUMBER,)), ("top_p", (NUMBER,)), ("seed", (INTEGER,))):
        value = _typed(obj, key, kinds)
        if value is not None:
            values[key] = value
    return values


def _min_tokens(obj: dict, values: dict) -> int:
    """vLLM's `min_tokens`: no end-of-answer token before this many (0 to the answer's length)."""
    value = _typed(obj, "min_tokens", (INTEGER,))
    if value is None:
        return 0
    most = values.get("max_new_tokens", GenerationFlags.max_new_tokens)
    if not 0 <= value <= most:
        raise ApiError(400, f"'min_tokens' must be from 0 to the answer's {most:,} tokens, got {value}",
                       "invalid_value")
    return value


def _stops(obj: dict) -> tuple[str, ...]:
    stop = obj.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not (isinstance(stops, list) and len(stops) <= MAX_STOPS and all(isinstance(s, str) and s for s in stops)):
        raise ApiError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} of them, "
                            f"got {_short(stop)}", "invalid_type")
    return tuple(stops)


def _refuse_unsupported(obj: dict) -> None:
    """Fields that would change what comes back, which this server cannot honour: refused, not ignored."""
    n = _typed(obj, "n", (INTEGER,))
    if n is not None and n != 1:
        raise ApiError(400, f"'n' must be 1 (one answer per request), got {n}", "unsupported")
    if obj.get("logprobs") or obj.get("top_logprobs"):
        raise ApiError(400, "'logprobs' are not supported", "unsupported")
    if obj.get("tools") or obj.get("functions"):
        raise ApiError(400, "tools and functions are not supported", "unsupported")
    response_format = obj.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise ApiError(400, "'response_format' must be text; structured output is not supported", "unsupported")


def _conversation(messages) -> tuple[str | None, str, list[tuple[str, str | None]]]:
    """(system, video URL, turns) from OpenAI messages: an optional system message first, then user and
    assistant turns in order, ending with the user's question; the video is one `video_url` part of the
    first user message (or an `image_url` part: clients such as simonw/llm send every attachment as an
    image; what it holds is read as a video all the same, and a still image is refused as the CLI
    refuses one). Consecutive user messages are one turn (a video, then a question)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", "invalid_type")
    system, video, runs = None, None, []  # runs: [role, [texts]]
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object, got {_kind(message)}", "invalid_type")
        role = message.get("role")
        texts, urls = _content(message.get("content"), where, role)
        if role in ("system", "developer"):
            if runs or system is not None:
                raise ApiError(400, f"{where}: one system message at most, before the conversation", "invalid_value")
            system = "\n".join(texts)
            continue
        in_first_user_message = not runs or (len(runs) == 1 and runs[0][0] == "user")
        if urls and (video is not None or not in_first_user_message):
            raise ApiError(400, f"{where}: a request carries one video, in the first user message", "invalid_value")
        video = urls[0] if urls else video
        if runs and runs[-1][0] == role == "user":
            runs[-1][1].extend(texts)
        elif runs and runs[-1][0] == role:
            raise ApiError(400, f"{where}: two assistant messages in a row; turns alternate", "invalid_value")
        else:
            runs.append([role, list(texts)])
    if not runs or runs[0][0] != "user" or runs[-1][0] != "user":
        raise ApiError(400, "the conversation must start and end with a user message", "invalid_value")
    if video is None:
        raise ApiError(400, "a request needs a video: a video_url part in the first user message", "invalid_value")
    questions = ["\n".join(texts) for role, texts in runs if role == "user"]
    answers = ["\n".join(texts) for role, texts in runs if role == "assistant"] + [None]
    return system, video, list(zip(questions, answers))


def _content(content, where: str, role) -> tuple[list[str], list[str]]:
    """A message's text parts and video URLs; only a user message may carry a video."""
    if role not in ("system", "developer", "user", "assistant"):
        raise ApiError(400, f"{where}: role {_short(role)} is not supported; use system, user or assistant",
                       "invalid_value")
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list) or not content:
        raise ApiError(400, f"{where}.content must be a string or a non-empty list of parts", "invalid_type")
    texts, urls = [], []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("video_url", "image_url") and role == "user":  # an image part: the video of a client
            url = part.get(kind)                                     # that only sends images (simonw/llm)
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise ApiError(400, f"{at}: {kind} needs a 'url' string", "invalid_type")
            urls.append(url)
        elif kind in ("input_audio", "file"):
            raise ApiError(400, f"{at}: {kind} parts are not supported; send a video_url", "unsupported")
        else:
            raise ApiError(400, f"{at} must be a text part" + (" or a video_url part" if role == "user" else ""),
                           "invalid_type")
    if len(urls) > 1:
        raise ApiError(400, f"{where}: a request carries one video, in the first user message", "invalid_value")
    return texts, urls


def _typed(obj: dict, key: str, kinds: tuple[str, ...], prefix: str = ""):
    """obj[key] if it is of one of the JSON `kinds` (None when absent or null), else a 400."""
    value = obj.get(key)
    if value is None:
        return None
    checks = {NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
              TEXT: lambda v: isinstance(v, str), FLAG: lambda v: isinstance(v, bool),
              "an object": lambda v: isinstance(v, dict)}
    if not any(checks[kind](value) for kind in kinds):
        raise ApiError(400, f"'{prefix}{key}' must be {' or '.join(kinds)}, got {_short(value)}", "invalid_type")
    return value


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
