"""Privacy audit of hash codes: attacks (inversion, re-identification, attribute and membership
inference) and DP-SGD training. Filled by the privacy-audit issue; the hashing interface already
exposes what it needs (``HashingMethod.per_sample_loss`` gates DP-SGD, codes are packed per split)."""
