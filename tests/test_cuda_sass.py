"""The built extension's GPU machine code (SASS), read without a GPU by cuobjdump:
every tensor-core attention kernel, for every dtype, head size and arch built
(sm_80, sm_90), runs its products on tensor cores (HMMA.16816.F32[.BF16]), loads
fragments with ldmatrix (LDSM) and its tiles with cp.async (LDGSTS); and never
reloads from local memory (no spills)."""
from __future__ import annotations

import re
import subprocess
from collections import Counter, defaultdict

import pytest

import maven_fast
from maven_fast._extension import extension
from maven_fast.triton_aot import _tool

KERNELS = ("cross_modal_attention_tc_forward_kernel", "cross_modal_attention_tc_dq_kernel",
           "cross_modal_attention_tc_dkdv_kernel")
# Mangled template arguments: dtype and head size.
DTYPES = {"13__nv_bfloat16": "HMMA.16816.F32.BF16", "6__half": "HMMA.16816.F32"}
HEADS = (64, 128, 256)


def expected_mma(kernel: str, hd: int) -> int:
    """mma.sync instructions of one kernel instantiation, every loop unrolled: the
    tile sizes of cross_modal_attention_tc_kernel.cu (BN = keys per tile, BM/BNK =
    queries/keys per dK/dV tile), one m16n8k16 per 16 x 8 x 16 block of each product."""
    bn = 32 if hd == 256 else 64
    score = (hd // 16) * (bn // 8)      # S = Q K^T (and dP = dO V^T) over one key tile
    update = (bn // 16) * (hd // 8)     # O += P V, dQ += dS K
    if kernel.endswith("forward_kernel"):
        return score + update
    if kernel.endswith("dq_kernel"):
        return 2 * score + update
    bm = bnk = bn
    qg = bm // 16
    nb = bnk // (8 // qg) // 8          # phase 1: n8 blocks per warp
    ndh = hd // (8 // (bnk // 16)) // 8  # phase 2: n8 blocks of a warp's column slice
    return 2 * (hd // 16) * nb + 2 * (bm // 16) * ndh


def _built_archs() -> list[str]:
    info = maven_fast.build_info()
    if extension() is None or not info.get("cuda_kernels"):
        pytest.skip("maven_fast._C was built without CUDA kernels")
    return list(info["cuda_archs"])  # e.g. ["sm_80", "sm_90"]


def sass_instructions(path: str) -> dict[tuple[str, str], Counter]:
    """Opcode counts per (arch, mangled function) of every cubin in ``path``."""
    out = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    arch = fun = ""
    op = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)")
    for line in out.splitlines():
        if line.startswith("arch = "):
            arch = line.split()[2]
        elif "Function : " in line:
            fun = line.split("Function : ")[1].strip()
        elif fun and (m := op.match(line)):
            counts[(arch, fun)][m.group(1)] += 1
    return counts


@pytest.fixture(scope="module")
def sass():
    archs = _built_archs()
    return archs, sass_instructions(extension().__file__)


def test_tensor_core_kernels_use_mma_ldmatrix_and_cp_async_on_every_arch(sass):
    archs, counts = sass
    assert archs, "no CUDA arch recorded in build_info()"
    for arch in archs:
        for kernel in KERNELS:
            for dtype, hmma in DTYPES.items():
                for hd in HEADS:
                    tag = f"{kernel}I{dtype}Li{hd}E"
                    found = [c for (a, f), c in counts.items() if a == arch and tag in f]
                    assert len(found) == 1, f"{arch} {tag}: {len(found)} functions in the SASS"
                    ops = found[0]
                    want = expected_mma(kernel, hd)
                    assert ops[hmma] == want, f"{arch} {tag}: {ops[hmma]} x {hmma}, expected {want}"
                    assert ops["LDSM.16.M88.4"] + ops["LDSM.16.MT88.4"] > 0, f"{arch} {tag}: no ldmatrix"
                    assert ops["LDGSTS.E.BYPASS.128"] > 0, f"{arch} {tag}: no cp.async"
                    # A spill reloads (LDL); the forward's only local memory is the
                    # argument buffer of the device-side length error's printf (STL).
                    reloads = [o for o in ops if o.startswith("LDL")]
                    assert not reloads, f"{arch} {tag}: loads from local memory (spills) {reloads}"


def test_simt_kernels_have_no_tensor_core_instruction(sass):
    # The counter-check: the parser tells the two families apart.
    archs, counts = sass
    simt = [(k, c) for k, c in counts.items() if "cross_modal_attention_forward_kernel" in k[1]]
    assert simt, "SIMT attention kernels not found in the SASS"
    for (arch, fun), ops in simt:
        assert not any(o.startswith("HMMA") for o in ops), f"{arch} {fun}"
