#!/usr/bin/env python3
"""Regenerate the bad-input corpus for makd's data layer (standard library only).

Run from anywhere: python3 tests/corpus/data/make_corpus.py
The files are committed; this script documents exactly how each one was made.
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png_gray(width, height, value):
    """A valid 8-bit grayscale PNG filled with `value`."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + bytes([value]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


ok = png_gray(4, 4, 128)

# imagefolder: one tree whose bad files fail on get(), each naming its path.
write("imagefolder/bad-files/train/good/ok.png", ok)
write("imagefolder/bad-files/train/bad/zero-byte.png", b"")
write("imagefolder/bad-files/train/bad/truncated.png", ok[: len(ok) // 2])
# A JPEG start-of-image and JFIF header, then nothing: the decoder runs out of bytes.
write("imagefolder/bad-files/train/bad/truncated.jpg",
      b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xdb\x00\x43\x00")
write("imagefolder/bad-files/train/bad/not-an-image.png", "this is text, not a picture\n")
write("imagefolder/bad-files/train/bad/garbage.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 garbage!")
# A class directory without images (git keeps no empty dirs; the README is not an image).
write("imagefolder/empty-class/train/a/ok.png", ok)
write("imagefolder/empty-class/train/b/README.txt", "no images in this class\n")
# A tree with a train split only: the test split is missing.
write("imagefolder/no-test-split/train/a/ok.png", ok)

# csv manifests, each wrong in one way.
write("csv/no-split-column.csv", "path,label\na.png,cat\n")
write("csv/no-path-column.csv", "file,label,split\na.png,cat,train\n")
write("csv/wrong-field-count.csv", "path,label,split\na.png,cat,train\nb.png,dog\n")
write("csv/bad-split.csv", "path,label,split\na.png,cat,train\nb.png,dog,test\nc.png,dog,validation\n")
write("csv/unterminated-quote.csv", "path,label,split\n\"a.png,cat,train\n")
write("csv/empty-label.csv", "path,label,split\na.png,cat,train\nb.png,,test\n")
write("csv/duplicate.csv", "path,label,split\na.png,cat,train\nb.png,dog,train\na.png,dog,train\n")
write("csv/only-train.csv", "path,label,split\na.png,cat,train\n")
write("csv/empty.csv", "\n\n")
