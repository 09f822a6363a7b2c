"""`dycoke run`: many questions from a JSONL file, grouped by video, sharded, resumable.

Why it is shaped this way:
- Records are grouped by (video, sampling) in first-appearance order, and each group is one
  `Session`: the video is decoded, encoded and compressed once for all its questions, and follow-up
  questions reuse the cached [prefix + video] keys and values.
- Work is split by whole groups, first by `--shard i/N` (independent jobs), then among the processes
  of a launcher (accelerate/torchrun). The split depends only on the input file, never on what is
  already done, so a rerun assigns every group to the same place and resume stays per file.
- Resume is by id: what the output (and any rank file left next to it) already holds is skipped;
  `--retry-failed` first drops the failure lines so those records run again. Each process appends to
  a file only it writes (batch.answers makes every line durable); rank 0 merges the rank files into the
  output once every process is done.
- One failing record (a bad line, an undecodable video, out of memory) becomes a failure line and
  the run goes on; only Ctrl-C (KeyboardInterrupt) stops it, with nothing partial written.
"""

from __future__ import annotations

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
    output: Path  # the job's output file (already tagged for --shard)
    sampling: object  # video.SamplingRequest: resolved per video against the family's sampling
    compression: object
    generation: object
    shard: tuple[int, int] = (0, 1)
    retry_failed: bool = False
    debug: bool = False
    system: str | None = None


def own_file(output: Path, processes: Processes) -> Path:
    """The file this process appends to: the output itself, or its rank file under a launcher."""
    return output if processes.count == 1 else tagged(output, f"rank-{processes.index}-of-{processes.count}")


@contextmanager
def writer_locks(output: Path, processes: Processes):
    """This process's one-writer locks: its own file, and (rank 0, which merges) the output."""
    from dycoke_cli.outputs import exclusive

    with ExitStack() as stack:
        own = own_file(output, processes)
        stack.enter_context(exclusive(own))
        if processes.index == 0 and own != output:
            stack.enter_context(exclusive(output))
        yield


def run_job(job: Job, processes: Processes, load_lm: Callable[[], object], progress) -> dict | None:
    """Answer this process's share of the pending records; on rank 0 merge and return the summary
    of every record of the job (None on other ranks)."""
    from dycoke_cli.batch.summary import summarize

    if job.source == "-" and processes.count > 1:
        raise BadInputError("under a launcher every process reads the questions: give a file, not stdin")
    mine = share(group_records(job.records, job.sampling), *job.shard)
    groups = share(mine, processes.index, processes.count)
    own = own_file(job.output, processes)
    done = _resume(job, own, processes, progress)
    pending = [g for g in (_without(g, done) for g in groups) if g.records]
    total = sum(len(g.records) for g in pending)
    lm = load_lm() if any(g.path for g in pending) else None
    with progress.running(total, skipped=sum(len(g.records) for g in groups) - total), AnswerFile(own) as answers:
        def write(line: dict) -> None:
            answers.write(line)
            progress.advance(line)

        answer_groups(lm, pending, job.compression, job.generation, write, job.debug, job.system)
    processes.wait()
    if processes.index != 0:
        return None
    finish(job.output)
    wanted = {id_key(r.id) for g in mine for r in g.records}
    return summarize([line for line in read_lines(job.output)[0] if id_key(line["id"]) in wanted], job.output)


def _resume(job: Job, own: Path, processes: Processes, progress) -> set[str]:
    """Repair the files this process writes (dropping failures for --retry-failed) and return the ids
    already settled there, in the merged output, and in rank files a crashed run left behind."""
    def keep(line: dict) -> bool:  # input failures are read again; runtime ones on --retry-failed
        kind = failure_kind(line)
        return kind is None or (kind == RUNTIME and not job.retry_failed)

    for path in {own, job.output} if processes.index == 0 else {own}:
        _, dropped = repair(path, keep)
        if dropped:
            progress.notice(f"{path}: dropped {dropped} incomplete line(s) left by an interrupted run")
    processes.wait()  # rank 0 has repaired the output before anyone reads it
    lines = [line for path in {job.output, own, *rank_files(job.output)} for line in read_lines(path)[0]]
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


def answer_groups(lm, groups: list[Group], compression, generation, write: Callable[[dict], None],
                  debug: bool = False, system: str | None = None) -> None:
    """Answer every record group by group, calling `write` once per record with its line."""
    from dycoke_cli.engine import Session

    for group in groups:
        if group.path is None:
            for record in group.records:
                write(failure_line(record.id, record.error, INPUT))
            continue
        spec = group.compress or compression
        try:
            plan, encoded = _encode(lm, group, spec, generation, system)
        except Exception as exc:  # noqa: BLE001 - the group fails, the run goes on
            reason = _describe(exc, debug)
            for record in group.records:
                write(failure_line(record.id, f"line {record.line}: {reason}", _kind(exc)))
            continue
        session = None
        for record in group.records:
            try:
                session = session or Session(lm, encoded, plan, system=system)
                limit = record.max_new_tokens or generation.max_new_tokens
                answer = session.ask(record.prompt, replace(generation, max_new_tokens=limit))
                line = answer_line(record, answer)
            except Exception as exc:  # noqa: BLE001 - the record fails, the run goes on
                session = None  # a failed generate may leave its cache half-extended: start afresh
                line = failure_line(record.id, f"line {record.line}: {_describe(exc, debug)}", _kind(exc))
            write(line)
        encoded = session = None  # let this video's tokens and cache go before the next is encoded


def _encode(lm, group: Group, spec, generation, system):
    """Plan the group's video (its frames checked against the model's context), then decode and encode."""
    from dycoke_cli.engine import encode
    from dycoke_cli.plan import plan_video
    from dycoke_cli.video import probe_video

    longest = max((r.max_new_tokens or generation.max_new_tokens for r in group.records))
    plan = plan_video(probe_video(group.path), group.sampling, spec, lm.adapter, [r.prompt for r in group.records],
                      longest, system)
    return plan, encode(lm, plan)


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
