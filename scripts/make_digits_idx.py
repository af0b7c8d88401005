#!/usr/bin/env python3
"""Writes scikit-learn's bundled handwritten digits (UCI optdigits, 1,797 8x8
images, 10 classes; CC BY 4.0) as an IDX dataset: a second real dataset, of
another shape, for the tests of `pate lab --data`. Pixels 0..16 are scaled
to 0..255. The first 1,397 items are the training split, the last 400 the
test split. Usage: python3 scripts/make_digits_idx.py tests/data/digits
(needs scikit-learn; the output is committed, so tests do not)."""
import gzip
import struct
import sys

import numpy as np
from sklearn.datasets import load_digits


def write(path, magic, dims, data):
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(struct.pack(">I", magic))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(data.tobytes())


def main(out):
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.uint8)
    for split, sl in (("train", slice(0, 1397)), ("t10k", slice(1397, None))):
        imgs, labs = images[sl], labels[sl]
        write(f"{out}/{split}-images-idx3-ubyte.gz", 0x803, (len(imgs), 8, 8), imgs)
        write(f"{out}/{split}-labels-idx1-ubyte.gz", 0x801, (len(labs),), labs)


if __name__ == "__main__":
    main(sys.argv[1])
