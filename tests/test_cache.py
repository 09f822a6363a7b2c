"""The video cache in process: the entry format turns away every kind of damage, the key misses on each
of its components and hits on the same request, a cached encoding answers exactly as a fresh one on
every family, and the size cap evicts the least recently used entry.

The format is checked against an independent reading of it (safetensors' own loader and the
checksum rule written out here), and damaged entries are made by hand, not by the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dycoke_cli.cache import VideoCache
from dycoke_cli.cache.key import canonical, entry_key
from dycoke_cli.cache.store import Unusable, decode_entry, encode_entry
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.plan import Plan, plan_video
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling, SamplingRequest, probe_video

KEY = "ab" * 32
SIX = Generation(max_new_tokens=6, min_new_tokens=6)
QUESTION = "What happens in this video?"


# --- the entry format --------------------------------------------------------------------------------

def split(blob: bytes) -> tuple[dict, bytes]:
    """safetensors framing as its specification gives it: u64 header length, JSON header, data."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def checksum(text: str, data: bytes) -> str:
    """The documented rule: SHA-256 of the "dycoke" string's UTF-8 bytes, then the data section."""
    return hashlib.sha256(text.encode() + data).hexdigest()


def rewritten(blob: bytes, change_info=lambda info: None, change_tensors=lambda tensors: None) -> bytes:
    """An entry rebuilt by hand with its JSON or tensors changed and a valid checksum: what a producer of
    another version, or a buggy one, would write."""
    header, _ = split(blob)
    info = json.loads(header["__metadata__"]["dycoke"])
    tensors = st_load(blob)
    change_info(info)
    change_tensors(tensors)
    _, data = split(st_save(tensors))
    info["data_bytes"] = len(data)
    text = json.dumps(info)
    return st_save(tensors, metadata={"dycoke": text, "sha256": checksum(text, data)})


@pytest.fixture(scope="module")
def blob() -> bytes:
    generator = torch.Generator().manual_seed(0)
    tensors = {"tokens": torch.randn(3, 4, 8, generator=generator).bfloat16(),
               "extra.deepstack_0": torch.randn(3, 4, 8, generator=generator).bfloat16(),
               "trailing": torch.randn(1, 8, generator=generator).bfloat16()}
    return encode_entry(KEY, tensors, {"note": "aaaa"})


def test_an_entry_reads_back_exactly_and_is_plain_safetensors(blob):
    tensors, info = decode_entry(blob, KEY)
    reference = st_load(blob)  # safetensors' own reader: no pickle anywhere
    assert set(tensors) == set(reference) == {"tokens", "extra.deepstack_0", "trailing"}
    assert all(torch.equal(tensors[name], reference[name]) for name in tensors)
    assert tensors["tokens"].dtype == torch.bfloat16 and tuple(tensors["tokens"].shape) == (3, 4, 8)
    header, data = split(blob)
    meta = header["__metadata__"]
    assert set(meta) == {"dycoke", "sha256"} and meta["sha256"] == checksum(meta["dycoke"], data)
    assert info == {"note": "aaaa", "format": "dycoke.encoding", "version": 1, "key": KEY, "data_bytes": len(data)}


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


DAMAGE = {
    "empty": (lambda b: b"", "truncated"),
    "truncated data": (lambda b: b[:-7], "truncated"),
    "truncated header": (lambda b: b[:40], "truncated"),
    "flipped data byte": (lambda b: _flip(b, len(b) - 20), "checksum mismatch"),
    "flipped byte in the JSON": (lambda b: b.replace(b"aaaa", b"aaab", 1), "checksum mismatch"),
    "flipped byte in the checksum": (lambda b: b.replace(split(b)[0]["__metadata__"]["sha256"][:6].encode(), b"000000", 1),
                                     "checksum mismatch"),
    "broken JSON": (lambda b: b.replace(b'"__metadata__"', b'"__metadata__\x00', 1), "damaged header"),
    "other version": (lambda b: rewritten(b, change_info=lambda i: i.update(version=2)), "another version"),
    "other format": (lambda b: rewritten(b, change_info=lambda i: i.update(format="x")), "not a dycoke cache entry"),
    "plain safetensors": (lambda b: st_save(st_load(b)), "not a dycoke cache entry"),
    "another key": (lambda b: rewritten(b, change_info=lambda i: i.update(key="cd" * 32)), "another key"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_kind_of_damage_is_unusable(blob, damage):
    make, reason = DAMAGE[damage]
    with pytest.raises(Unusable, match=reason):
        decode_entry(make(blob), KEY)


# --- the key -----------------------------------------------------------------------------------------

@pytest.fixture
def video(clip, tmp_path):
    """A clip of this test's own, so its file time can be changed."""
    return shutil.copy(clip, tmp_path / "clip.mp4")


def _source(lm, path, cache, sampling=Sampling(frames=4), compression=None) -> str:
    return encode_video(lm, path, sampling, compression, cache).stats.video_source


def test_every_key_component_misses_and_the_same_request_hits(tiny, video, tmp_path):
    from dycoke_cli.models import load_model

    notes = []
    cache = VideoCache(folder=tmp_path / "encodings", notice=notes.append)
    assert _source(tiny, video, cache) == "encoded"
    assert _source(tiny, video, cache) == "cache"
    assert _source(tiny, video, cache, compression="dycoke:k=0.3") == "cache"  # same frames, same features
    assert _source(tiny, video, cache, Sampling(frames=3)) == "encoded"  # other frames
    assert _source(tiny, video, cache, compression="uniform:rate=0.5") == "encoded"  # other method subset
    assert _source(tiny, video, cache, compression="uniform:rate=0.5") == "cache"
    assert _source(tiny, video, cache, compression="uniform:rate=0.25") == "encoded"
    # a selection inside the vision tower: its method and settings
    assert _source(tiny, video, cache, compression="evs:stage=encoder,encoder_layer=1") == "encoded"
    assert _source(tiny, video, cache, compression="evs:stage=encoder,encoder_layer=1") == "cache"
    assert _source(tiny, video, cache, compression="evs:stage=encoder,encoder_layer=2") == "encoded"
    assert _source(tiny, video, cache, compression="evs:stage=encoder,encoder_layer=1,rate=0.5") == "encoded"
    assert _source(tiny, video, cache, compression="dycoke:stage=encoder,encoder_layer=1") == "encoded"
    status = video.stat()
    os.utime(video, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # touched
    assert _source(tiny, video, cache) == "encoded"
    assert _source(tiny, video, cache) == "cache"
    assert _source(load_model("random:tiny", device="cpu", dtype="bfloat16", quant="none"), video, cache) == "encoded"
    # another model: the same checkpoint with one weight changed, loaded from its folder
    folder = shutil.copytree(tiny.source.folder, tmp_path / "changed")
    weights = st_load((folder / "model.safetensors").read_bytes())
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    (folder / "model.safetensors").write_bytes(st_save(weights, metadata={"format": "pt"}))
    other = load_model(str(folder), device="cpu", dtype="float32", quant="none")
    assert _source(other, video, cache) == "encoded"
    assert _source(other, video, cache) == "cache"
    assert notes == []


def test_whole_file_verification_keeps_its_own_entries(tiny, video, tmp_path):
    cache = VideoCache(folder=tmp_path / "encodings", notice=pytest.fail)
    plan = plan_video(probe_video(video), SamplingRequest(frames=4), None, tiny.adapter)
    quick, whole = entry_key(tiny, plan), entry_key(tiny, plan, verify=True)
    assert whole.description["video"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert quick.digest != whole.digest
    assert _source(tiny, video, cache) == "encoded"
    cache.verify = True
    assert _source(tiny, video, cache) == "encoded"
    assert _source(tiny, video, cache) == "cache"


def test_bytes_known_by_their_content_hit_wherever_they_are_written(tiny, clip, tmp_path):
    """A server's temporary copy of sent bytes changes path and time each time it is written: given
    their SHA-256 (`content`), the key ignores both; without it, each copy is another file."""
    from dycoke_cli.engine import encode

    cache = VideoCache(folder=tmp_path / "encodings", notice=pytest.fail)
    copies = [shutil.copy(clip, tmp_path / f"{i}.video") for i in range(2)]
    os.utime(copies[1], ns=(10**18, 10**18))
    content = {"sha256": hashlib.sha256(clip.read_bytes()).hexdigest()}
    plans = [plan_video(probe_video(c), SamplingRequest(frames=4), None, tiny.adapter) for c in copies]
    assert encode(tiny, plans[0], cache, content).stats.video_source == "encoded"
    assert encode(tiny, plans[1], cache, content).stats.video_source == "cache"
    assert encode(tiny, plans[1], cache).stats.video_source == "encoded"  # by its file: another entry
    key = entry_key(tiny, plans[1], content=content)
    assert key.description["video"] == {"content": content} and str(tmp_path) not in canonical(key.description)
    assert key.label["video"] == f"sha256:{content['sha256']}"
    assert len(list((tmp_path / "encodings").iterdir())) == 2


def test_a_setting_that_joins_the_plans_encoding_key_misses(tiny, video, tmp_path, monkeypatch):
    """What a plan says decides the encoding (an encoder-stage method's settings, say) reaches the key
    through Plan.encoding_key alone."""
    cache = VideoCache(folder=tmp_path / "encodings", notice=pytest.fail)
    assert _source(tiny, video, cache) == "encoded"
    original = Plan.encoding_key.fget
    monkeypatch.setattr(Plan, "encoding_key", property(lambda plan: (*original(plan), ("encoder", {"layer": 3}))))
    assert _source(tiny, video, cache) == "encoded"
    assert _source(tiny, video, cache) == "cache"
    monkeypatch.setattr(Plan, "encoding_key", property(lambda plan: (*original(plan), ("encoder", {"layer": 4}))))
    assert _source(tiny, video, cache) == "encoded"


def test_every_methods_plan_has_a_plain_encoding_key(tiny, clip):
    """The key is JSON of plain values for every registered method, the same text every time."""
    from dycoke_cli.compress.registry import METHODS

    probe = probe_video(clip)
    for name, method in METHODS.items():
        keys = {p.name for p in method.params}
        # every method that can act inside random:tiny's 2-layer tower does so here, at layer 1
        spec = name + (":" + ",".join((["stage=encoder"] if "stage" in keys else []) + ["encoder_layer=1"])
                       if "encoder_layer" in keys else "")
        plan = plan_video(probe, SamplingRequest(frames=8), spec, tiny.adapter)
        settings = json.loads(canonical(plan.encoding_key))
        assert settings[0] == str(clip.resolve())
        assert (settings[3] is None) == ("encoder_layer" not in keys), spec
        assert entry_key(tiny, plan).digest == entry_key(tiny, plan_video(probe, SamplingRequest(frames=8), spec,
                                                                              tiny.adapter)).digest


# --- a cached encoding answers as a fresh one ---------------------------------------------------------

def _same_features(a, b) -> None:
    assert torch.equal(a.tokens, b.tokens) and a.tokens.dtype == b.tokens.dtype
    assert a.grid == b.grid and a.times == b.times and a.group == b.group and a.meta == b.meta
    assert set(a.extras) == set(b.extras) and all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    assert (a.trailing is None) == (b.trailing is None)
    assert a.trailing is None or torch.equal(a.trailing, b.trailing)
    assert (a.present is None) == (b.present is None) and a.patches_kept == b.patches_kept
    assert a.present is None or torch.equal(a.present, b.present)


def _same_answer(a, b) -> None:
    assert a.token_ids == b.token_ids
    assert max(float((x - y).abs().max()) for x, y in zip(a.logits, b.logits)) <= 1e-6


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-smolvlm2"])
def test_a_cached_encoding_answers_as_a_fresh_one(name, tiny, family, wide_clip, tmp_path):
    lm = tiny if name == "tiny" else family(name)
    cache = VideoCache(folder=tmp_path / "encodings", notice=pytest.fail)
    fresh = encode_video(lm, wide_clip, Sampling(frames=4))
    assert encode_video(lm, wide_clip, Sampling(frames=4), cache=cache).stats.video_source == "encoded"
    cached = encode_video(lm, wide_clip, Sampling(frames=4), cache=cache)
    assert cached.stats.video_source == "cache" and cached.stats.vision_encode_s == 0.0
    assert cached.stats.frame_timestamps == fresh.stats.frame_timestamps
    assert cached.stats.cache_saved_s > 0
    _same_features(fresh.features, cached.features)
    _same_answer(Session(lm, fresh, "dycoke").ask(QUESTION, SIX, keep_logits=True),
                 Session(lm, cached, "dycoke").ask(QUESTION, SIX, keep_logits=True))
    # uniform on a full encoding: its own frames are encoded once through the same cache, then read
    reference = Session(lm, fresh, "uniform:rate=0.5")
    first, second = Session(lm, cached, "uniform:rate=0.5"), Session(lm, cached, "uniform:rate=0.5")
    assert (first.video.stats.video_source, second.video.stats.video_source) == ("encoded", "cache")
    _same_features(reference.video.features, second.video.features)
    expected = reference.ask(QUESTION, SIX, keep_logits=True)
    _same_answer(expected, second.ask(QUESTION, SIX, keep_logits=True))
    answer = second.ask("Is anything moving?", SIX)  # a follow-up: the video was paid for once
    assert answer.stats.to_dict()["video_source"] == "reused"
    # a selection inside the vision tower: the cells it kept (`present`) and the tower's figures come back
    spec = "evs:stage=encoder,encoder_layer=1"
    fresh = encode_video(lm, wide_clip, Sampling(frames=4), spec)
    assert encode_video(lm, wide_clip, Sampling(frames=4), spec, cache).stats.video_source == "encoded"
    cached = encode_video(lm, wide_clip, Sampling(frames=4), spec, cache)
    assert cached.stats.video_source == "cache"
    assert fresh.features.present is not None and not bool(fresh.features.present.all())
    _same_features(fresh.features, cached.features)
    assert (cached.stats.encoder_layer, cached.stats.tower_patches, cached.stats.tower_patches_kept) == (
        1, fresh.stats.tower_patches, fresh.stats.tower_patches_kept)
    _same_answer(Session(lm, fresh, spec).ask(QUESTION, SIX, keep_logits=True),
                 Session(lm, cached, spec).ask(QUESTION, SIX, keep_logits=True))


# --- size cap --------------------------------------------------------------------------------------------

def test_the_least_recently_used_entry_goes_first_under_the_cap(tiny, clip, tmp_path):
    videos = [shutil.copy(clip, tmp_path / f"v{i}.mp4") for i in range(3)]
    folder = tmp_path / "encodings"
    roomy = VideoCache(folder=folder, notice=pytest.fail)
    _source(tiny, videos[0], roomy, Sampling(frames=2))
    (size,) = [p.stat().st_size for p in folder.iterdir()]
    cache = VideoCache(folder=folder, max_bytes=int(size * 2.5), notice=pytest.fail)
    _source(tiny, videos[1], cache, Sampling(frames=2))
    first, second = (entry_key(tiny, plan_video(probe_video(v), SamplingRequest(frames=2), None, tiny.adapter)).digest
                     for v in videos[:2])
    os.utime(folder / f"{first}.safetensors", (1_000_000, 1_000_000))  # used long ago...
    os.utime(folder / f"{second}.safetensors", (2_000_000, 2_000_000))
    assert _source(tiny, videos[0], cache, Sampling(frames=2)) == "cache"  # ...and now again
    _source(tiny, videos[2], cache, Sampling(frames=2))  # a third entry does not fit: the second goes
    assert len(list(folder.iterdir())) == 2 and not (folder / f"{second}.safetensors").exists()
    assert sum(p.stat().st_size for p in folder.iterdir()) <= cache.max_bytes
    assert _source(tiny, videos[0], cache, Sampling(frames=2)) == "cache"
    assert _source(tiny, videos[1], cache, Sampling(frames=2)) == "encoded"


def test_an_encoding_larger_than_the_cap_is_not_kept(tiny, clip, tmp_path):
    notes = []
    cache = VideoCache(folder=tmp_path / "encodings", max_bytes=1000, notice=notes.append)
    for frames in (2, 3):  # said once, not once per video
        video = encode_video(tiny, clip, Sampling(frames=frames), cache=cache)
        assert video.stats.video_source == "encoded" and list((tmp_path / "encodings").iterdir()) == []
    assert len(notes) == 1 and "larger than the cache's cap (1,000 bytes, --cache-size): not kept" in notes[0]


def test_the_folder_is_private(tiny, clip, tmp_path):
    folder = tmp_path / "deep" / "encodings"
    encode_video(tiny, clip, Sampling(frames=2), cache=VideoCache(folder=folder, notice=pytest.fail))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())


def test_profile_reads_encodings_from_the_cache_only_when_asked(tiny, clip, tmp_path):
    from dycoke_cli.profile.runner import run_profile

    plans = [("none", plan_video(probe_video(clip), SamplingRequest(frames=2), "none", tiny.adapter))]
    report = run_profile(tiny, plans, QUESTION, Generation(max_new_tokens=2), 1,
                         cache=VideoCache(folder=tmp_path / "encodings", notice=pytest.fail))
    assert report["video_cache"] is True and "video cache on" in report["notes"][0]
    (measured,) = report["encodings"]  # the warm-up stored it; the measured round read it
    assert measured["vision_encode_s"] == measured["preprocess_s"] == measured["video_decode_s"] == 0.0
