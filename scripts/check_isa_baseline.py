#!/usr/bin/env python3
"""Fails if a function the linker could share between translation units holds code past x86-64-v2.

The SIMD kernels are compiled for their ISA inside target regions (core/simd/target.h) and have
internal linkage. A function with external or weak linkage (an inline function or template
instantiation, std:: ones included) exists once per binary: whichever object's copy the linker
keeps runs on every CPU. If one copy was compiled for AVX2 or AVX-512, a CPU without them dies
with SIGILL in generic code (the std::vector<float>::_M_fill_assign of the avx512bf16 file did).

For each ELF file given: every FUNC symbol whose binding is GLOBAL or WEAK (in .symtab, else
.dynsym), or LOCAL with hidden visibility (a hidden global the linker made local), is
disassembled (objdump) and checked for instructions beyond x86-64-v2: any VEX/EVEX-encoded one
(AVX, AVX2, FMA, F16C, AVX-512: mnemonics v*), ymm/zmm/mask registers, BMI1/BMI2/LZCNT/MOVBE/ADX,
AES/PCLMUL/SHA and AMX. (tzcnt is allowed: objdump prints GCC's baseline `rep bsf` that way, and
both give the same result on the non-zero inputs it is emitted for.)

    python scripts/check_isa_baseline.py FILE...    exit 0: clean, 1: offenders (listed), 2: bad input
"""
import bisect
import re
import subprocess
import sys

SCALAR_EXTENSIONS = {
    "andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx",
    "lzcnt", "movbe", "adcx", "adox", "aesenc", "aesenclast", "aesdec", "aesdeclast", "aesimc",
    "aeskeygenassist", "pclmulqdq", "sha1rnds4", "sha1nexte", "sha1msg1", "sha1msg2", "sha256rnds2",
    "sha256msg1", "sha256msg2", "ldtilecfg", "sttilecfg", "tilerelease", "tilezero", "tileloadd",
    "tileloaddt1", "tilestored",
}
WIDE_REGISTER = re.compile(r"%(ymm|zmm)\d+|%k[0-7]\b|%tmm\d")
AMX_DOT = re.compile(r"^tdp")
INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(?:(?:rex\.?\w*|data16|lock|rep[nez]*|notrack|bnd|cs|ds)\s+)*(\S+)\s*(.*)$")


def beyond_baseline(mnemonic, operands):
    name = mnemonic.split(".")[0]
    if name.startswith("v") and name not in ("verr", "verw"):
        return True
    if name in SCALAR_EXTENSIONS or AMX_DOT.match(name) or re.match(r"^k(and|or|xor|not|mov|shift|test|unpck|add)", name):
        return True
    return bool(WIDE_REGISTER.search(operands))


def shared_functions(path):
    """[(start, end, name)] of the functions with external/weak linkage, sorted by start."""
    listing = run(["readelf", "-sW", "--demangle", path])
    table, functions = None, []
    for line in listing.splitlines():
        header = re.match(r"Symbol table '([^']+)'", line)
        if header:
            table = header.group(1)
            continue
        fields = line.split(None, 7)
        if len(fields) < 8 or fields[3] != "FUNC" or fields[6] == "UND":
            continue
        size = int(fields[2], 0)
        binding, visibility = fields[4], fields[5]
        if size == 0 or not (binding in ("GLOBAL", "WEAK") or (binding == "LOCAL" and visibility == "HIDDEN")):
            continue
        functions.append((table, int(fields[1], 16), int(fields[1], 16) + size, fields[7]))
    tables = {f[0] for f in functions}
    chosen = ".symtab" if ".symtab" in tables else ".dynsym"
    return sorted({(start, end, name) for table, start, end, name in functions if table == chosen})


def run(command):
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit(f"check_isa_baseline: error: {command[0]} not found (binutils)")
    except subprocess.CalledProcessError as error:
        print(f"check_isa_baseline: error: {command[-1]}: {command[0]} failed: {error.stderr.strip()}", file=sys.stderr)
        sys.exit(2)


def offenders(path):
    functions = shared_functions(path)
    starts = [start for start, _, _ in functions]
    found = {}
    for line in run(["objdump", "-d", "--no-show-raw-insn", "-w", path]).splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        address = int(match.group(1), 16)
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= functions[i][1]:
            continue
        if beyond_baseline(match.group(2), match.group(3)):
            found.setdefault(functions[i][2], f"{match.group(2)} {match.group(3)}".strip())
    return len(functions), found


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        checked, found = offenders(path)
        if checked == 0:
            print(f"check_isa_baseline: error: {path}: no function symbols to check", file=sys.stderr)
            return 2
        for name, instruction in sorted(found.items()):
            print(f"{path}: {name}: external/weak linkage but beyond x86-64-v2: {instruction}")
        print(f"{path}: {checked} shared functions checked, {len(found)} beyond x86-64-v2")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
