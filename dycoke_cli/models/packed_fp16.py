"""fbgemm's packed fp16 kernel for the language model's single-row products on the CPU.

Why: a decode step multiplies one activation row by every weight matrix, so it is bound by how fast
the weights are read. torch's bf16 `F.linear` on one row (oneDNN's brgemm) reads ~9 GB/s a Zen 4
core; fbgemm's packed fp16 GEMM, the kernel under torch's dynamic fp16 quantization (fp16 weights
packed once, fp32 activations and accumulation), reads at the memory's speed. Past ~16 rows bf16
brgemm is faster, so a packed module sends only inputs of at most MAX_ROWS rows (decode steps, the
head at the prompt's last position) to the packed copy, and everything else to its own weights,
which stay in place. fp16 holds every bf16 weight in the normal range exactly (more mantissa bits)
and an fp32 weight to 11 bits; a weight beyond fp16's range keeps its module on the stock kernel.

A weight is packed in blocks of CHUNK_ROWS rows: the fp32 temporaries stay small, packing is faster,
and it can be spread over decode steps (cpu_decode.py decides when).
"""

from __future__ import annotations

from types import MethodType

MAX_ROWS = 8  # inputs of at most this many rows take the packed kernel (measured crossover: 16 rows)
CHUNK_ROWS = 8192
FP16_MAX = 65504.0


def fp16_available() -> bool:
    """Whether this torch build has fbgemm's packed fp16 linear (x86 builds do)."""
    import torch

    try:
        return hasattr(torch.ops.quantized, "linear_prepack_fp16") and hasattr(torch.ops.quantized,
                                                                                 "linear_dynamic_fp16")
    except (AttributeError, RuntimeError):
        return False


def pack_block(weight, bias, start: int):
    """fbgemm's packed fp16 copy of rows [start, start + CHUNK_ROWS) of an (N, K) weight (and its bias):
    row blocks keep the fp32 temporaries small, pack faster, and let packing be spread over steps."""
    import torch

    rows = weight.detach()[start:start + CHUNK_ROWS].float()
    part = None if bias is None else bias.detach()[start:start + CHUNK_ROWS].float()
    return torch.ops.quantized.linear_prepack_fp16(rows, part)


def pack_fp16(weight, bias=None) -> list:
    """Every row block of an (N, K) weight, packed."""
    return [pack_block(weight, bias, start) for start in range(0, weight.shape[0], CHUNK_ROWS)]


def fp16_linear(x, blocks: list):
    """x (R, K) float32 through packed fp16 blocks -> (R, N) float32."""
    import torch

    parts = [torch.ops.quantized.linear_dynamic_fp16(x, block) for block in blocks]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _packed_forward(self, x):
    """nn.Linear.forward of a packed module: few rows through the fp16 blocks, the rest as before."""
    import torch.nn.functional as F

    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 0 < rows <= MAX_ROWS:
        return F.linear(x, self.weight, self.bias)
    out = fp16_linear(x.reshape(rows, x.shape[-1]).float(), self.dycoke_fp16)  # (rows, N)
    return out.view(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def packable(module) -> bool:
    """A plain linear in a float dtype (bitsandbytes' linears subclass nn.Linear: not those)."""
    import torch

    return type(module) is torch.nn.Linear and module.weight.dtype in (torch.float32, torch.bfloat16, torch.float16)


def fits_fp16(module) -> bool:
    """Every weight and bias within fp16's finite range (a larger one would become infinite)."""
    import torch

    for tensor in (module.weight, module.bias):
        if tensor is not None and max(abs(float(v)) for v in torch.aminmax(tensor.detach())) >= FP16_MAX:
            return False
    return True


def pack_next_block(module) -> bool:
    """Pack the module's next row block; once all are packed its few-row inputs take them. True when done."""
    blocks = module.__dict__.setdefault("dycoke_blocks", [])
    blocks.append(pack_block(module.weight, module.bias, len(blocks) * CHUNK_ROWS))
    if len(blocks) * CHUNK_ROWS < module.weight.shape[0]:
        return False
    module.dycoke_fp16 = module.__dict__.pop("dycoke_blocks")
    module.forward = MethodType(_packed_forward, module)
    return True


def next_block_weights(module) -> int:
    """Weights in the module's next row block to pack."""
    done = len(module.__dict__.get("dycoke_blocks", ())) * CHUNK_ROWS
    return min(CHUNK_ROWS, module.weight.shape[0] - done) * module.weight.shape[1]


def unpack_module(module) -> None:
    """Back to the stock forward; the packed copies are freed."""
    for name in ("forward", "dycoke_fp16", "dycoke_blocks"):
        module.__dict__.pop(name, None)
