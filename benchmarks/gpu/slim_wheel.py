"""Strip a bitsandbytes wheel to the native libraries a CUDA 13 GPU loads (prepare.sh --slim).

    python benchmarks/gpu/slim_wheel.py benchmarks/gpu/.whl/bitsandbytes-*.whl

bitsandbytes picks `libbitsandbytes_cuda{torch.version.cuda without the dot}.so` at import; the GPU's
torch is 2.11+cu130, so cuda130 (and cuda132, for a newer image) are kept with the CPU library, and the
CUDA 11/12, ROCm and XPU builds (~33 MiB of the 41 MiB wheel) are dropped. The wheel is rewritten in place
with its RECORD updated, so pip installs it as usual; a wheel already slim is left alone.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

DROP = re.compile(r"^bitsandbytes/libbitsandbytes_(cuda1[0-2]\d|rocm\d+|xpu\d+)\.(so|dll|dylib)$")


def slim(path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(path) as src:
        names = src.namelist()
        dropped = [n for n in names if DROP.match(n)]
        if not dropped:
            return 0, path.stat().st_size
        tmp = path.with_suffix(".slim.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename in dropped:
                    continue
                data = src.read(info.filename)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
                dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    before = path.stat().st_size
    tmp.replace(path)
    return len(dropped), before


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        count, before = slim(path)
        after = path.stat().st_size
        print(f"{path.name}: dropped {count} libraries, {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
