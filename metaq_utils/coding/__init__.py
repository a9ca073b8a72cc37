"""The compressed model file (NumPy; no torch):

* :mod:`.codecs` — the entropy coders (Huffman, range, gzip, zstd, raw) and their byte readers;
* :mod:`.fileformat` — the ``.mtq`` file: header, groups, codebooks, payload, checksum; writer,
  reader and the bit-exact round trip;
* :mod:`.preprocessing` — the input a network expects, recorded in the header (and in checkpoints);
* :mod:`.architectures` — the network registry: file-format id, module class, parameter count, preprocessing.
"""
