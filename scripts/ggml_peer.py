#!/usr/bin/env python3
"""ggml (llama.cpp's CPU backend) as the peer of pntk's CPU q4 GEMV: build and run helpers.

ggml comes only from the pinned upstream tarball ../shared/upstream/ggml-d99724f2b141.tar.gz
(never copied into this repository). It is unpacked into build/ggml/ (git-ignored), built with
CMake in one folder per variant and linked with our own timing program, scripts/ggml_q4_timing.c,
which runs in a process of its own (ggml's OpenMP runtime and torch's never share one):

    native  -DGGML_NATIVE=ON (-march=native: on an AVX-512/AMX machine ggml's AVX-512 and AMX paths)
    avx2    -DGGML_NATIVE=OFF, SSE4.2/AVX/AVX2/BMI2/FMA/F16C on, every AVX-512, AVX-VNNI and AMX option off
            (an AVX2 proxy on an AVX-512 machine)

Both with OpenMP, Release, and GGML_LLAMAFILE=ON as llama.cpp builds ggml (its tinyBLAS q4_0/q8_0
kernels serve M >= 2 of unrepacked q4_0). Builds are cached: a variant is rebuilt only when its
stamp (tarball sha256 + CMake options) is missing or different; the timing program is recompiled
when its source is newer than the binary.

    python scripts/ggml_peer.py build native|avx2 [CC]  # build (or find cached) and print the binary's path
    python scripts/ggml_peer.py run native -- --k 4096 --n 4096 --m 1 --threads 2 --type q4_0

CC (bench_q4_cpu.py --ggml-cc): a C compiler for ggml, e.g. clang-14, built in a folder of its own.
With GCC 12 ggml's AMX tile path (the AMX buffer type at M > 1) dies of SIGILL: GCC 12's
_tile_loadconfig declares only 8 bytes of the 64-byte tile config read, so the stores of the tile
shapes are dropped as dead (llama.cpp PR #26954 moves the config to .rodata for this).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARBALL = os.path.join(ROOT, "..", "shared", "upstream", "ggml-d99724f2b141.tar.gz")
TARBALL_SHA256 = "32b02582b617171417a88f5ffede4e958a6bdf2811a9414ee1c5a456cc9df86a"
BUILD_ROOT = os.path.join(ROOT, "build", "ggml", "d99724f2b141")
TIMING_SOURCE = os.path.join(ROOT, "scripts", "ggml_q4_timing.c")

COMMON_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_OPENMP=ON",
    "-DGGML_LLAMAFILE=ON",
    "-DGGML_CPU_REPACK=ON",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BUILD_TESTS=OFF",
    "-DGGML_BUILD_EXAMPLES=OFF",
    "-DGGML_CCACHE=OFF",
    "-DGGML_BACKEND_DL=OFF",
]
VARIANT_OPTIONS = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_BMI2=ON",
             "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF",
             "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF",
             "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"],
}


class Unavailable(Exception):
    """ggml cannot be built or run here; the message says why."""


def unavailable_reason():
    """Why the ggml comparison cannot run here, or None."""
    if not os.path.isfile(TARBALL):
        return f"{os.path.normpath(TARBALL)} is absent (a fresh clone has no ../shared)"
    for tool in ("cmake", "cc"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH"
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_dir(log):
    """The unpacked tarball (build/ggml/<commit>/src/ggml), unpacked once."""
    source = os.path.join(BUILD_ROOT, "src", "ggml")
    if os.path.isfile(os.path.join(source, "CMakeLists.txt")):
        return source
    sha = _sha256(TARBALL)
    if sha != TARBALL_SHA256:
        raise Unavailable(f"{TARBALL}: sha256 {sha}, expected {TARBALL_SHA256}")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    log(f"ggml: unpacking {os.path.normpath(TARBALL)} into {os.path.relpath(os.path.dirname(source), ROOT)}/")
    staging = tempfile.mkdtemp(dir=os.path.dirname(source), prefix=".unpack-")
    try:
        with tarfile.open(TARBALL) as archive:
            archive.extractall(staging, filter="data") if hasattr(tarfile, "data_filter") else archive.extractall(staging)
        os.rename(os.path.join(staging, "ggml"), source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source


def _run_logged(command, log_path, what):
    with open(log_path, "a") as log_file:
        log_file.write("$ " + " ".join(command) + "\n")
        log_file.flush()
        result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-25:])
        raise Unavailable(f"{what} failed (exit {result.returncode}); the last lines of {log_path}:\n{tail}")


def cxx_for(compiler):
    """The C++ compiler that goes with C compiler `compiler` (clang-14 -> clang++-14, gcc-12 -> g++-12)."""
    base = os.path.basename(compiler)
    for c_name, cxx_name in (("clang", "clang++"), ("gcc", "g++"), ("cc", "c++")):
        if base.startswith(c_name):
            return os.path.join(os.path.dirname(compiler), cxx_name + base[len(c_name):])
    raise Unavailable(f"no C++ compiler known for C compiler {compiler!r} (clang-N, gcc-N or cc)")


def build_dir(variant, compiler=None):
    return os.path.join(BUILD_ROOT, variant + (f"-{os.path.basename(compiler)}" if compiler else ""))


def compiler_of(variant, compiler=None):
    """The C++ compiler CMake found for a build, e.g. "GNU 12.2.0" (ggml-cpu is mostly C++)."""
    files = os.path.join(build_dir(variant, compiler), "CMakeFiles")
    try:
        for version in sorted(os.listdir(files)):
            path = os.path.join(files, version, "CMakeCXXCompiler.cmake")
            if os.path.isfile(path):
                found = {}
                with open(path) as f:
                    for line in f:
                        for key in ("CMAKE_CXX_COMPILER_ID", "CMAKE_CXX_COMPILER_VERSION"):
                            if line.startswith(f"set({key} "):
                                found[key] = line.split(None, 1)[1].strip().rstrip(")").strip('"')
                return f"{found.get('CMAKE_CXX_COMPILER_ID', '?')} {found.get('CMAKE_CXX_COMPILER_VERSION', '?')}"
    except OSError:
        pass
    return "unknown compiler"


def ensure_built(variant, log=print, jobs=None, compiler=None):
    """Path of the timing program linked against the ggml build `variant`, building what is missing.
    `compiler`: a C compiler for ggml (e.g. clang-14; its C++ partner is derived), default CMake's."""
    if variant not in VARIANT_OPTIONS:
        raise ValueError(f"unknown ggml variant {variant!r} (native or avx2)")
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    if compiler and shutil.which(compiler) is None:
        raise Unavailable(f"no `{compiler}` on PATH")
    source = _source_dir(log)
    build = build_dir(variant, compiler)
    options = COMMON_OPTIONS + VARIANT_OPTIONS[variant]
    if compiler:
        options = options + [f"-DCMAKE_C_COMPILER={compiler}", f"-DCMAKE_CXX_COMPILER={cxx_for(compiler)}"]
    stamp_path = os.path.join(build, "pntk-stamp.json")
    stamp = {"tarball_sha256": TARBALL_SHA256, "options": options}
    libs = [os.path.join(build, "src", f"lib{name}.so") for name in ("ggml", "ggml-base", "ggml-cpu")]
    try:
        with open(stamp_path) as f:
            cached = json.load(f) == stamp
    except (OSError, ValueError):
        cached = False
    if not (cached and all(os.path.isfile(lib) for lib in libs)):
        if os.path.isdir(build):
            shutil.rmtree(build)
        os.makedirs(build)
        log_path = os.path.join(build, "build.log")
        jobs = jobs or os.cpu_count() or 2
        log(f"ggml: building the {variant} variant{f' with {compiler}' if compiler else ''} in "
            f"{os.path.relpath(build, ROOT)}/ (CMake, {jobs} jobs; a few minutes on 2 cores; log "
            f"{os.path.relpath(log_path, ROOT)})", flush=True)
        _run_logged(["cmake", "-S", source, "-B", build] + options, log_path, f"ggml {variant}: cmake configure")
        _run_logged(["cmake", "--build", build, "-j", str(jobs), "--target", "ggml", "ggml-base", "ggml-cpu"],
                    log_path, f"ggml {variant}: cmake build")
        missing = [lib for lib in libs if not os.path.isfile(lib)]
        if missing:
            raise Unavailable(f"ggml {variant}: the build made no {', '.join(missing)}")
        with open(stamp_path, "w") as f:
            json.dump(stamp, f)
    binary = os.path.join(build, "ggml_q4_timing")
    if not os.path.isfile(binary) or os.path.getmtime(binary) < os.path.getmtime(TIMING_SOURCE):
        lib_dir = os.path.join(build, "src")
        # Compiled for the baseline x86-64: the program only calls ggml, whose kernels carry the ISA.
        command = ["cc", "-O2", "-std=c11", "-Wall", "-Wextra", "-o", binary + ".tmp", TIMING_SOURCE,
                   "-I", os.path.join(source, "include"), "-L", lib_dir, "-Wl,-rpath," + lib_dir,
                   "-lggml", "-lggml-cpu", "-lggml-base", "-lm"]
        _run_logged(command, os.path.join(build, "build.log"), f"compiling {os.path.relpath(TIMING_SOURCE, ROOT)}")
        os.replace(binary + ".tmp", binary)
    return binary


def parse_lines(text, tag):
    """Records of the timing program's machine-readable lines `tag key=value ...`."""
    records = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == tag:
            records.append(dict(field.split("=", 1) for field in fields[1:] if "=" in field))
    return records


def run_timing(binary, args, timeout=None, env=None):
    """Runs the timing program; returns its stdout. Raises Unavailable on failure."""
    result = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                            env=env)
    if result.returncode != 0:
        raise Unavailable(f"{os.path.basename(binary)} {' '.join(map(str, args))}: exit {result.returncode}\n"
                          f"{result.stderr[-3000:]}{result.stdout[-2000:]}")
    return result.stdout


class Server:
    """The timing program in --serve mode: one process, commands on its stdin, one answer line each."""

    def __init__(self, binary, threads, min_mb, hugepages=True):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        command = [binary, "--serve", "--threads", str(threads), "--min-mb", str(min_mb),
                   "--hugepages", "1" if hugepages else "0"]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.stderr.seek(0)
            raise Unavailable(f"the ggml timing process ended (exit {code}): {self.stderr.read()[-2000:]}")
        words = line.split()
        record = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        record["answer"] = words[0]
        return record

    def ask(self, command, **fields):
        self.proc.stdin.write(command + "".join(f" {key}={value}" for key, value in fields.items()) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def amx_multi_row_problem(binary):
    """None if the AMX buffer type's M > 1 path (AMX tiles) runs in this build, else why not. (Built
    with GCC 12, it dies of SIGILL: GCC 12's _tile_loadconfig declares only 8 bytes of its 64-byte
    operand read, so the compiler drops ggml's stores of the tile rows and columns, and the first
    tile instruction finds the tiles unconfigured.)"""
    problems = []
    for type_name in ("q4_0", "q4_K"):
        result = subprocess.run([binary, "--k", "256", "--n", "64", "--m", "2", "--threads", "1", "--type", type_name,
                                 "--buft", "AMX", "--min-mb", "0", "--repeats", "1"], capture_output=True, text=True,
                                timeout=120)
        if result.returncode < 0:
            problems.append(f"{type_name}: killed by signal {-result.returncode}"
                            + (" (SIGILL)" if -result.returncode == 4 else ""))
        elif result.returncode != 0 or "ok=0" in result.stdout:
            problems.append(f"{type_name}: exit {result.returncode} {result.stdout.strip().splitlines()[-1:]}")
    return "; ".join(problems) or None


def main(argv):
    if len(argv) >= 2 and argv[0] in ("build", "run"):
        compiler = argv[2] if len(argv) >= 3 and argv[2] != "--" else None
        try:
            binary = ensure_built(argv[1], log=lambda *a, **k: print(*a, file=sys.stderr, **k), compiler=compiler)
        except Unavailable as error:
            print(f"ggml unavailable: {error}", file=sys.stderr)
            return 2
        if argv[0] == "build":
            print(binary)
            return 0
        rest = argv[3:] if compiler else argv[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        os.execv(binary, [binary] + rest)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
