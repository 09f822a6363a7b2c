"""`dycoke run`: many questions from a JSONL file, grouped by video, sharded, resumable, under one
compression setting or several side by side.

Why it is shaped this way:
- Records are grouped by (video, sampling) in first-appearance order, and each group is one
  `Session` per setting: the video is decoded, encoded and compressed once for all its questions, and
  follow-up questions reuse the cached [prefix + video] keys and values.
- Several settings share the work that does not depend on them: each group's video is probed once,
  planned once per setting (plan.plan_video), and decoded and encoded once per distinct encoding key
  (settings that encode the same frames the same way share it; `uniform` encodes its own frames, and
  a setting that selects inside the vision tower, stage=encoder, its own tower run). Each setting then has
  its own Session and its own answers file, so a setting's file holds exactly what a run of that
  setting alone writes, and resumes on its own.
- Work is split by whole groups, first by `--shard i/N` (independent jobs), then among the processes
  of a launcher (accelerate/torchrun). The split depends only on the input file, never on what is
  already done, so a rerun assigns every group to the same place and resume stays per file.
- Resume is by id, per setting: what its output (and any rank file left next to it) already holds is
  skipped, except input failures, read again (the line or the video may have been fixed);
  `--retry-failed` also drops the runtime failure lines so those records run again. Each process appends to
  a file only it writes (batch.answers makes every line durable); rank 0 merges the rank files into the
  output once every process is done.
- One failing record (a bad line, an undecodable video, out of memory) becomes a failure line and
  the run goes on; only Ctrl-C (KeyboardInterrupt) stops it, with nothing partial written.
"""

from __future__ import annotations

import functools
import os
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Callable

from dycoke_cli.batch.records import Malformed, Record
from dycoke_cli.batch.answers import (INPUT, RUNTIME, AnswerFile, failure_kind, id_key, merge_lines, read_lines,
                                     repair, rewrite, tagged)
from dycoke_cli.errors import BadInputError, describe, is_out_of_memory


@dataclass
class Group:
    """Records answered against one encoding and one compression; `path` is None for a malformed line."""

    path: Path | None
    sampling: object | None  # video.SamplingRequest
    compress: object | None = None  # compress.spec.CompressionSpec, None for the run's own
    records: list = field(default_factory=list)


def group_records(records: list[Record | Malformed], sampling) -> list[Group]:
    """Groups in first-appearance order; a per-record `frames` or `compress` gives its records their own group."""
    groups: dict[tuple, Group] = {}
    for record in records:
        if isinstance(record, Malformed):
            groups[("line", record.line)] = Group(None, None, None, [record])
            continue
        own = sampling if record.frames is None else replace(sampling, frames=record.frames, fps=None,
                                                              max_frames=None)
        key = (record.path, own, record.compress)
        groups.setdefault(key, Group(record.path, own, record.compress)).records.append(record)
    return list(groups.values())


def share(items: list, index: int, count: int) -> list:
    """The index-th of `count` contiguous, near-equal slices (the first ones one longer)."""
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return items[start: start + size + (1 if index < extra else 0)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """ "i/N" -> (i, N) with 0 <= i < N; None means the whole input."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)  # ASCII digits: int() takes others too
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise BadInputError(f"--shard {text}: expected i/N with 0 <= i < N, e.g. 0/4")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Setting:
    """One compression setting of a run and the answers file it writes (already tagged for --shard)."""

    spec: object  # compress.spec.CompressionSpec
    output: Path


def setting_outputs(source: str, output: Path | None, shard: tuple[int, int], labels: list[str]) -> list[Path]:
    """Each setting's answers file: with one setting the output itself, as ever; with several, one file
    per setting beside it, named by the setting (answers.jsonl -> answers.evs_budget=0.25.jsonl), then
    tagged for the shard (answers.evs_budget=0.25.shard-0-of-4.jsonl)."""
    from dycoke_cli.errors import SettingsError
    from dycoke_cli.outputs import file_tag

    if len(labels) == 1:
        return [default_output(source, output, shard)]
    base = default_output(source, output, (0, 1))
    tags = [file_tag(label) for label in labels]
    if len(set(tags)) < len(tags):
        raise SettingsError(f"settings {', '.join(labels)} would share an answers file name; write them apart")
    return [default_output(source, tagged(base, tag), shard) for tag in tags]


def default_output(source: str, output: Path | None, shard: tuple[int, int]) -> Path:
    """--output, or <input without .jsonl>.answers.jsonl, links resolved (outputs.resolve_output); a shard
    of N>1 writes its own tagged file."""
    from dycoke_cli.outputs import resolve_output

    if output is None:
        if source == "-":
            raise BadInputError("reading questions from stdin needs --output")
        stem = Path(source).with_suffix("")
        output = stem.with_name(f"{stem.name}.answers.jsonl")
    if source != "-" and output.resolve() == Path(source).resolve():
        raise BadInputError(f"--output {output} is the input file")
    index, count = shard
    output = resolve_output(output)
    return tagged(output, f"shard-{index}-of-{count}") if count > 1 else output


class Processes:
    """This process among a launcher's (accelerate launch, torchrun): accelerate's PartialState when
    WORLD_SIZE > 1, else a plain single process with no process group at all."""

    def __init__(self):
        self._state = None
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            import torch
            from accelerate import PartialState

            # A rank that finishes early waits at the final barrier for the slowest one: hours, not
            # the default 30 minutes. A crashed rank makes the launcher stop the others instead.
            self._state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(days=7))
        self.index = self._state.process_index if self._state else 0
        self.count = self._state.num_processes if self._state else 1
        self.local = self._state.local_process_index if self._state else 0

    def device(self, requested: str) -> str:
        """Under a launcher, auto/cuda become cuda:LOCAL_RANK (or cpu without CUDA)."""
        if self.count == 1 or requested not in ("auto", "cuda"):
            return requested
        import torch

        return f"cuda:{self.local}" if torch.cuda.is_available() else "cpu"

    def wait(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


@dataclass
class Job:
    """One `dycoke run`: where answers go and how the work is split."""

    source: str
    records: list  # read_records(source): read before the model is looked at, so a bad file fails first
    settings: list[Setting]  # in the order given: the first is what the others are compared with
    sampling: object  # video.SamplingRequest: resolved per video against the family's sampling
    generation: object
    shard: tuple[int, int] = (0, 1)
    retry_failed: bool = False
    debug: bool = False
    system: str | None = None
    pictures: object | None = None  # kept.KeptPictures for --save-kept: one picture per answered record
    cache: object | None = None  # cache.VideoCache: encodings read and stored across runs (None: off)


def own_file(output: Path, processes: Processes) -> Path:
    """The file this process appends to: the output itself, or its rank file under a launcher."""
    return output if processes.count == 1 else tagged(output, f"rank-{processes.index}-of-{processes.count}")


@contextmanager
def writer_locks(outputs: list[Path], processes: Processes):
    """This process's one-writer locks, for every setting's output: its own file, and (rank 0, which
    merges) the output."""
    from dycoke_cli.outputs import exclusive

    with ExitStack() as stack:
        for output in outputs:
            own = own_file(output, processes)
            stack.enter_context(exclusive(own))
            if processes.index == 0 and own != output:
                stack.enter_context(exclusive(output))
        yield


def run_job(job: Job, processes: Processes, load_lm: Callable[[], object], progress) -> list[list[dict]] | None:
    """Answer this process's share of the pending records under every setting; on rank 0 merge and return
    each setting's lines for the job's records, in the order of the settings (None on other ranks)."""
    if job.source == "-" and processes.count > 1:
        raise BadInputError("under a launcher every process reads the questions: give a file, not stdin")
    mine = share(group_records(job.records, job.sampling), *job.shard)
    groups = share(mine, processes.index, processes.count)
    owns = [own_file(setting.output, processes) for setting in job.settings]
    pending = []  # per setting, every group narrowed to the records that setting has not settled
    for setting, own in zip(job.settings, owns):
        done = _resume(job, setting.output, own, processes, progress)
        pending.append([_without(g, done) for g in groups])
    total = sum(len(g.records) for part in pending for g in part)
    lm = load_lm() if any(g.path and g.records for part in pending for g in part) else None
    skipped = len(job.settings) * sum(len(g.records) for g in groups) - total
    with progress.running(total, skipped=skipped), ExitStack() as stack:
        files = [stack.enter_context(AnswerFile(own)) for own in owns]

        def write(index: int, line: dict) -> None:
            files[index].write(line)
            progress.advance(line)

        answer_groups(lm, pending, [s.spec for s in job.settings], job.generation, write, job.debug, job.system,
                      _picture_saver(job), job.cache)
    processes.wait()
    if processes.index != 0:
        return None
    wanted = {id_key(r.id) for g in mine for r in g.records}
    lines = []
    for setting in job.settings:
        finish(setting.output)
        lines.append([line for line in read_lines(setting.output)[0] if id_key(line["id"]) in wanted])
    return lines


def _picture_saver(job: Job):
    """on_answer for answer_groups: the record's picture under its setting (None without --save-kept)."""
    if job.pictures is None:
        return None

    def save(index: int, record: Record, plan, session, answer) -> None:
        job.pictures.save(plan, session, answer, job.settings[index].spec.label, record.id)

    return save


def _resume(job: Job, output: Path, own: Path, processes: Processes, progress) -> set[str]:
    """Repair the files this process writes for one setting (dropping the failures to run again) and
    return the ids already settled there, in the merged output, and in rank files a crashed run left."""
    def keep(line: dict) -> bool:  # input failures are read again; runtime ones on --retry-failed
        kind = failure_kind(line)
        return kind is None or (kind == RUNTIME and not job.retry_failed)

    for path in {own, output} if processes.index == 0 else {own}:
        _, dropped = repair(path, keep)
        if dropped:
            progress.notice(f"{path}: dropped {dropped} incomplete line(s) left by an interrupted run")
    processes.wait()  # rank 0 has repaired the output before anyone reads it
    lines = [line for path in {output, own, *rank_files(output)} for line in read_lines(path)[0]]
    return {id_key(line["id"]) for line in lines if keep(line)}


def _without(group: Group, done: set[str]) -> Group:
    return replace(group, records=[r for r in group.records if id_key(r.id) not in done])


def rank_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(tagged(output, "rank-*-of-*").name))


def finish(output: Path) -> None:
    """Merge the rank files into the output (each id once), then remove them."""
    ranks = rank_files(output)
    if not ranks:
        return
    rewrite(output, merge_lines([read_lines(output)[0]] + [read_lines(path)[0] for path in ranks]))
    for path in ranks:
        path.unlink()


def answer_groups(lm, pending: list[list[Group]], specs: list, generation, write: Callable[[int, dict], None],
                  debug: bool = False, system: str | None = None, on_answer: Callable | None = None,
                  cache=None) -> None:
    """Answer every record group by group under every setting: pending[s][g] is group g narrowed to the
    records setting s (specs[s]) still needs. `write(s, line)` is called once per record and setting;
    `on_answer(s, record, plan, session, answer)`, when given, after each answer is written; encodings are
    read from and stored in `cache` (a cache.VideoCache) when given.

    Per group: the video is probed once, planned per setting, and decoded and encoded once per distinct
    encoding; a failure of any step fails the records that depended on it, and the run goes on."""
    from dycoke_cli.engine import encode
    from dycoke_cli.video import probe_video

    for parts in zip(*pending):  # parts[s]: one group, narrowed for setting s
        todo = [s for s, part in enumerate(parts) if part.records]
        if not todo:
            continue
        if parts[0].path is None:
            for s in todo:
                for record in parts[s].records:
                    write(s, failure_line(record.id, record.error, INPUT))
            continue
        plans: dict[int, object] = {}
        try:
            probe = probe_video(parts[0].path)
        except Exception as exc:  # noqa: BLE001 - the group fails, the run goes on
            _fail(parts, todo, exc, debug, write)
            continue
        for s in todo:
            try:
                plans[s] = _plan(lm, probe, parts[s], parts[s].compress or specs[s], generation, system)
            except Exception as exc:  # noqa: BLE001 - the group fails under this setting
                _fail(parts, [s], exc, debug, write)
        shared: dict[tuple, list[int]] = {}  # settings with one encoding (Plan.encoding_key), in order
        for s, plan in plans.items():
            shared.setdefault(plan.encoding_key, []).append(s)
        for members in shared.values():
            try:
                encoded = encode(lm, plans[members[0]], cache)
            except Exception as exc:  # noqa: BLE001 - the group fails under these settings
                _fail(parts, members, exc, debug, write)
                continue
            for s in members:
                saver = None if on_answer is None else functools.partial(on_answer, s)
                _answer_records(lm, encoded, plans[s], parts[s].records, generation,
                                functools.partial(write, s), debug, system, saver)
            encoded = None  # let this video's tokens go before the next encoding is made


def _fail(parts: tuple, settings: list[int], exc: Exception, debug: bool, write: Callable[[int, dict], None]) -> None:
    """A failure line, of the kind `exc` is, for every pending record of these settings of a group."""
    reason, kind = _describe(exc, debug), _kind(exc)
    for s in settings:
        for record in parts[s].records:
            write(s, failure_line(record.id, f"line {record.line}: {reason}", kind))


def _plan(lm, probe, group: Group, spec, generation, system):
    """The group's plan under one setting (its frames checked against the model's context)."""
    from dycoke_cli.plan import plan_video

    longest = max((r.max_new_tokens or generation.max_new_tokens for r in group.records))
    return plan_video(probe, group.sampling, spec, lm.adapter, [r.prompt for r in group.records], longest, system)


def _answer_records(lm, encoded, plan, records: list, generation, write: Callable[[dict], None], debug: bool,
                    system: str | None, on_answer: Callable | None) -> None:
    """One setting's records of one group, in order, against one Session (follow-ups reuse its cache)."""
    from dycoke_cli.engine import Session

    session = None
    for record in records:
        answer = None
        try:
            session = session or Session(lm, encoded, plan, system=system)
            limit = record.max_new_tokens or generation.max_new_tokens
            answer = session.ask(record.prompt, replace(generation, max_new_tokens=limit))
            line = answer_line(record, answer)
        except Exception as exc:  # noqa: BLE001 - the record fails, the run goes on
            session = answer = None  # a failed generate may leave its cache half-extended: start afresh
            line = failure_line(record.id, f"line {record.line}: {_describe(exc, debug)}", _kind(exc))
        write(line)
        if on_answer is not None and answer is not None:
            on_answer(record, plan, session, answer)


def _describe(exc: BaseException, debug: bool) -> str:
    """One line for a failed record; an out-of-memory also gives the cached GPU memory back (a no-op
    without CUDA), so the next record starts from a clean allocator."""
    if is_out_of_memory(exc):
        import torch

        torch.cuda.empty_cache()
    elif debug:
        raise exc
    return describe(exc)


def answer_line(record: Record, answer) -> dict:
    """id, video, question, [options], answer, [choice, expected, correct], [task], then ask --json's stats."""
    from dycoke_cli.batch import choices

    line: dict = {"id": record.id, "video": record.video, "question": record.question}
    if record.options:
        line["options"] = record.options
    line["answer"] = answer.text
    if record.options:
        line["choice"] = choices.chosen_letter(answer.text, record.options)
    if record.expected is not None:
        line["expected"] = record.expected
        line["correct"] = choices.is_correct(answer.text, record.expected, record.options)
    if record.task is not None:
        line["task"] = record.task
    return {**line, **answer.stats.to_dict()}


def failure_line(record_id, error: str, kind: str = RUNTIME) -> dict:
    """{"id", "error", "failure"}: "input" when the record cannot run as written, "runtime" when running
    it failed (batch.answers.INPUT / RUNTIME)."""
    return {"id": record_id, "error": error, "failure": kind}


def _kind(exc: BaseException) -> str:
    """Bad input (an unreadable video, a setting the model cannot take, a prompt past the context) fails
    the same way every time; anything else may not."""
    return INPUT if isinstance(exc, BadInputError) else RUNTIME
