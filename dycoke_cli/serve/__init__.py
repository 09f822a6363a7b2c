"""`dycoke serve`: the HTTP layer of an OpenAI-compatible video server; no model logic lives here.

A request goes one way, each step in its own module:

  app.py        routes, the API key, the request body read under a size cap and a time limit
  schema.py     the JSON body -> a ChatRequest: OpenAI messages and generation fields, and the
                per-request `dycoke` settings checked by the command line's own declarations
  media.py      the video_url -> a local file (file:// inside the allowed folders, data: URLs to a
                private temporary file, http(s) only when allowed), each with its size caps
  planning.py   the ChatRequest + the video's probe -> a plan.Plan (every check of the CLI, once)
  worker.py     the one thread that runs the model: a bounded queue, cancellation, time limits
  sessions.py   Sessions kept by video and setting, so a repeat question reuses the encoding and the
                [prefix + video] KV cache; encodings.py is the one place an encoding comes from
  stops.py      OpenAI's `stop` strings cut from the answer, streamed or not
  responses.py  answers as OpenAI chat completions, whole or as server-sent events
  api_errors.py every failure as OpenAI's JSON error with its status, never a traceback
  server.py     uvicorn on a socket bound by us, a guard on open addresses, SIGTERM draining
"""
