"""The thesis' reported figures (spec §2–§3), as data, so notebooks can put ours beside them.

Everything here is *reported* by the METaQ thesis (A. Cardia, Univ. of Pisa, 2023-24), not
measured by this workspace.
"""
from __future__ import annotations

N_PARAMS = 44_426
FLOAT32_BITS = 32 * N_PARAMS                     # 1,421,632

# Training result (epoch 144, C = 6): test accuracy and "entropy" in bits.
TRAINING_RESULT = {"epoch": 144, "accuracy": 0.9895, "entropy_bits": 114_234}

# Table 7: best post-training quantizations (C_Q, accuracy, entropy bits).
TABLE7 = [(140, 0.9901, 59_601), (386, 0.9901, 70_135), (331, 0.9901, 68_712), (327, 0.9900, 68_583),
          (322, 0.9900, 68_531), (678, 0.9899, 76_202), (220, 0.9899, 63_668)]

# Table 8: coded sizes of the C_Q = 140 model, in bits (arithmetic coding = the entropy: computed,
# not encoded).
TABLE8 = {"huffman": 60_503, "arithmetic (computed)": 59_601, "gzip9": 61_336, "zstd22": 48_824}
HEADLINE = {"accuracy": 0.9901, "file_bits": 48_824, "ratio": 29, "codec": "zstd22"}

# Tables 1-6: (C, method) -> (max φ_w found, seconds); n = 44,000, 20 iterations unless said.
DUAL_TABLES = {
    256: {"DSS 1000 it": (-5.47e7, 22.81), "DSS 20 it": (-1.86e8, 2.53), "FISTA": (1.28e5, 2.28), "PBM": (2.21e5, 2.29)},
    128: {"DSS 1000 it": (-8.7e7, 13.19), "DSS 20 it": (-2.14e8, 1.23), "FISTA": (2.41e5, 1.39), "PBM": (2.12e4, 1.32)},
    64: {"DSS 1000 it": (-6.00e5, 7.53), "DSS 20 it": (-8.22e6, 0.76), "FISTA": (4.10e5, 0.85), "PBM": (2.09e4, 0.92)},
    32: {"DSS 1000 it": (-2.02e6, 5.72), "DSS 20 it": (-6.32e7, 0.56), "FISTA": (4.52e5, 0.57), "PBM": (2.21e4, 0.57)},
    16: {"DSS 1000 it": (-8.35e5, 4.31), "DSS 20 it": (-1.86e7, 0.45), "FISTA": (4.99e5, 0.46), "PBM": (2.64e5, 0.45)},
    8: {"DSS 1000 it": (-1.74e5, 3.30), "DSS 20 it": (-7.92e6, 0.36), "FISTA": (5.46e5, 0.35), "PBM": (2.05e4, 0.36)},
}
DUAL_ZETA = {"FISTA": 9e4, "PBM": 1e6}

# §2.2.4 speed-ups (Apple M1).
SPEEDUPS = {"cutting plane vs CVXPY (1,000 instances, C=256)": (3.19, 0.20, 16.0),
            "vectorised vs scalar cutting plane (10,000 instances, C=5)": (None, None, 2378.0),
            "specialised vs vectorised cutting plane (44,000 w x 1,000 runs, C=256)": (215.98, 18.66, 11.58)}

# §2.3: breakpoints for C = 256 over 10,000 random instances never exceeded 13;
# the Beta fit puts P(256 breakpoints) at 1.82e-157.
BREAKPOINTS = {"C": 256, "instances": 10_000, "max_observed": 13, "p_all_C": 1.82e-157}

# Published results by others (spec §3).
PUBLISHED = [("Liu & Liu 2018", 10.56, 0.9889), ("Wang 2018", 11, 0.9921), ("Moya Rueda 2017", 12.5, 0.990),
             ("Wang 2024", 26, None), ("METaQ (thesis)", 29, 0.9901), ("Deep Compression (Han 2016)", 39, 0.9926),
             ("DeepSZ (Jin 2019)", 56, 0.997)]
