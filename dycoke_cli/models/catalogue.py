"""What models this tool can run and what of them is on disk: the data behind `dycoke models`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dycoke_cli.errors import BadInputError


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _family_of(folder: Path) -> str | None:
    from dycoke_cli.models.registry import FAMILIES

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return next((f.family for f in FAMILIES if model_type in f.model_types), None)


def catalogue() -> dict:
    """{"families": [...], "specs": [...], "hub": [...]}: plain data for the listing and --json."""
    from dycoke_cli.models import builtin, random_specs
    from dycoke_cli.models.registry import FAMILIES

    families = [{"family": f.family, "model_types": list(f.model_types), "default_sampling": f.describe_sampling()}
                for f in FAMILIES]
    specs = [_spec_entry(builtin.BUILTIN_PREFIX + name, family, folder) for name, family, folder in builtin.catalogue()]
    specs += [_spec_entry(random_specs.RANDOM_PREFIX + name, family, folder)
              for name, family, folder in random_specs.catalogue()]
    return {"families": families, "specs": specs, "hub": _hub_cache()}


def _spec_entry(name: str, family: str, folder: Path | None) -> dict:
    built = folder is not None and folder.is_dir()
    return {"name": name, "family": family, "built": built, "folder": str(folder) if built else None,
            "bytes": _size(folder) if built else 0}


def names() -> list[tuple[str, str]]:
    """(spec, what it is) for every model --model can name without a path: built-in and random-weight
    specs, then the model repositories in huggingface-hub's cache (for shell completion)."""
    from dycoke_cli.models import builtin, random_specs

    out = [(builtin.BUILTIN_PREFIX + name, f"built-in {family} model") for name, family, _ in builtin.catalogue()]
    out += [(random_specs.RANDOM_PREFIX + name, f"random weights, {family}")
            for name, family, _ in random_specs.catalogue()]
    cache = _scan_hub()
    if cache is not None:
        out += [(repo.repo_id, "in the local Hub cache") for repo in sorted(cache.repos, key=lambda r: r.repo_id)
                if repo.repo_type == "model"]
    return out


def _scan_hub():
    """huggingface-hub's cache, or None when there is none yet."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir()
    except CacheNotFound:
        return None


def _hub_cache() -> list[dict]:
    cache = _scan_hub()
    if cache is None:
        return []
    repos = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snapshots = [rev.snapshot_path for rev in repo.revisions]
        family = next((f for f in (_family_of(s) for s in snapshots) if f), None)
        repos.append({"id": repo.repo_id, "bytes": repo.size_on_disk, "family": family})
    return repos


def remove(name: str | None, every_random: bool = False) -> list[str]:
    """Delete built random models (one, or all) or a cached Hub checkpoint; returns what was done."""
    from dycoke_cli.models import random_specs

    if every_random or (name and name.startswith(random_specs.RANDOM_PREFIX)):
        built = [(random_specs.RANDOM_PREFIX + n, folder) for n, _, folder in random_specs.catalogue()
                 if folder is not None and folder.is_dir()]
        if not every_random:
            random_specs.random_spec(name)  # an unknown spec is an error, not a silent no-op
            built = [(n, folder) for n, folder in built if n == name]
        freed = [f"removed {n} ({_size(folder) / 2**20:,.0f} MiB)" for n, folder in built]
        for _, folder in built:
            shutil.rmtree(folder)
        return freed or ["nothing to remove: no random model is built"]
    return [_remove_hub(name)]


def _remove_hub(repo_id: str) -> str:
    cache = _scan_hub()
    repo = next((r for r in cache.repos if r.repo_id == repo_id and r.repo_type == "model"), None) if cache else None
    if repo is None:
        raise BadInputError(f"'{repo_id}' is neither a random spec nor a Hub checkpoint in the local cache "
                            "(dycoke models lists them)")
    strategy = cache.delete_revisions(*(rev.commit_hash for rev in repo.revisions))
    strategy.execute()
    return f"removed {repo_id} ({strategy.expected_freed_size / 2**20:,.0f} MiB)"
