"""The built extension's x86 machine code, read with objdump: the register tiles
of the CPU micro-kernels (csrc/common/micro_gemm.h ``nn_tile``, fp32/fp64 FMA;
csrc/common/micro_gemm_bf16.h ``pairs_tile``, AVX512-BF16 ``vdpbf16ps``) keep
their accumulators in registers. GCC 12 -O3 once kept them in memory as well,
storing every accumulator on every step of the reduction loop (or loading and
storing around each FMA): correct results, half the speed, invisible to every
numerical test. Each tile is its own function (noinline) so that it can be read
here."""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from collections import defaultdict

import pytest

from maven_fast._extension import extension

pytestmark = [
    pytest.mark.skipif(extension() is None, reason="maven_fast._C is not built"),
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 kernels only"),
    pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)"),
]

TILE = re.compile(r"^[0-9a-f]+ <(?:void )?maven_fast::cpu_(AVX512|AVX2)::(micro|micro_bf16)::"
                  r"(nn_tile<(?:float|double), \d, \d, (?:true|false)>|pairs_tile<\d, \d>)\(.*(?<!@plt)>:$")
PRODUCT = {"micro": re.compile(r"\tvfmadd\d+p[sd]\s"), "micro_bf16": re.compile(r"\tvdpbf16ps\s")}
BF16_PRODUCT_DEST = re.compile(r"\tvdpbf16ps\s.*,(%zmm\d+)$")  # AT&T: the destination comes last
STACK_STORE = re.compile(r"\tv?mov\w*\s+%[xyz]mm\d+,\s*-?(?:0x[0-9a-f]+)?\(%rsp")


def _tiles() -> dict[tuple[str, str], dict[str, list[str]]]:
    """{(capability, family): {function name: its instructions}} for every tile in the extension."""
    lib = extension().__file__
    text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", lib], capture_output=True, text=True,
                          check=True).stdout
    tiles: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
    current = None
    for line in text.splitlines():
        m = TILE.match(line)
        if m:
            current = tiles[(m.group(1), m.group(2))].setdefault(m.group(3), [])
        elif current is not None and not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    return tiles


@pytest.fixture(scope="module")
def tiles():
    return _tiles()


@pytest.mark.parametrize("capability,vectors,partial", [("AVX512", 4, range(1, 5)), ("AVX2", 2, [2])])
def test_every_fp_tile_exists_and_multiplies(tiles, capability, vectors, partial):
    """Per row count (1-6): the full tile (all `vectors` column vectors) and the partial tiles:
    on AVX512 one per vector count (a block narrower than the full tile multiplies only the
    vectors it needs), on AVX2 one with both vectors (micro_gemm.h: kMinPartialNV)."""
    names = tiles[(capability, "micro")]
    for dtype in ("float", "double"):
        for rows in range(1, 7):
            for nv, full in [(vectors, "true")] + [(nv, "false") for nv in partial]:
                name = f"nn_tile<{dtype}, {rows}, {nv}, {full}>"
                assert name in names, f"{capability} {name} missing (inlined? it must stay noinline to be read)"
                assert any(PRODUCT["micro"].search(i) for i in names[name]), f"{capability} {name}: no FMA"


def test_every_bf16_pair_tile_exists_and_uses_vdpbf16ps(tiles):
    """One tile per row count (1-6) and column-vector count (1-4: a block narrower than 64
    columns multiplies only the vectors it has), each accumulating into rows x vectors registers
    (GCC may emit the reduction loop twice: distinct destinations, not products, are counted)."""
    names = tiles[("AVX512", "micro_bf16")]
    for rows in range(1, 7):
        for vectors in range(1, 5):
            name = f"pairs_tile<{rows}, {vectors}>"
            assert name in names, f"{name} missing (inlined? it must stay noinline to be read)"
            accumulators = {m.group(1) for i in names[name] if (m := BF16_PRODUCT_DEST.search(i))}
            assert len(accumulators) == rows * vectors, (
                f"{name}: vdpbf16ps into {len(accumulators)} registers, expected {rows * vectors}")


def _accumulator_stores(family: str, body: list[str]) -> int:
    """Vector stores to the stack among the products (from the first product to the last: the
    reduction loop). AVX2 has 16 vector registers: its partial tiles spill the column masks once,
    before the loop, which is not counted."""
    products = [k for k, i in enumerate(body) if PRODUCT[family].search(i)]
    if not products:
        return 0
    return sum(1 for i in body[products[0]:products[-1]] if STACK_STORE.search(i))


def test_tile_accumulators_stay_in_registers(tiles):
    spilled = {f"{cap}::{family}::{name}": n
               for (cap, family), names in tiles.items() for name, body in names.items()
               if (n := _accumulator_stores(family, body))}
    assert tiles and not spilled, f"accumulators stored to the stack in register tiles: {spilled}"
