"""The paper's Table 1 as data, and the names that point into it. No torch here: the command
line and the config read it without paying for ``import torch``.

Example:
    >>> from verydeep.models.arch import CFGS, parse_arch
    >>> parse_arch("vgg16_bn"), len([x for x in CFGS["E"] if x != "M"])
    (('D', True), 16)
"""

from __future__ import annotations

# Table 1 of the paper, one column per configuration.
_TABLE1 = {
    "A": "3-64 M 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "A-LRN": "3-64 LRN M 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "B": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "C": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 1-256 M 3-512 3-512 1-512 M 3-512 3-512 1-512 M",
    "D": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 3-256 M 3-512 3-512 3-512 M 3-512 3-512 3-512 M",
    "E": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 3-256 3-256 M "
    "3-512 3-512 3-512 3-512 M 3-512 3-512 3-512 3-512 M",
}
CFGS: dict[str, list[str]] = {name: spec.split() for name, spec in _TABLE1.items()}

# The usual names; "_bn" may follow any letter but A-LRN (BN replaces what LRN was for).
ALIASES = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E", "a-lrn": "A-LRN", "a_lrn": "A-LRN"}

# Krizhevsky et al. (2012): n=5, alpha=1e-4, beta=0.75, k=2 in b = a / (k + alpha * sum a^2)^beta.
# torch's LocalResponseNorm divides alpha by n (Caffe's convention), so alpha_sum = alpha * n there.
LRN_PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


def parse_arch(name: str) -> tuple[str, bool]:
    """Map ``"D"``, ``"vgg16_bn"``, ``"A-LRN"``... to (paper letter, batch_norm)."""
    key = name.strip().lower().replace(" ", "")
    bn = key.endswith("_bn") or key.endswith("-bn")
    if bn:
        key = key[:-3]
    letter = ALIASES.get(key, key.upper())
    if letter not in CFGS:
        known = ", ".join(list(CFGS) + list(ALIASES)[:4])
        raise ValueError(f"unknown VGG config {name!r}; known: {known} (add _bn for batch norm)")
    if bn and letter == "A-LRN":
        raise ValueError("A-LRN has no batch-norm variant (use A_bn)")
    return letter, bn


def conv_names(letter: str) -> list[str]:
    """Caffe-style names ``conv<block>_<i>`` of the conv layers of a config, in order."""
    names, block, i = [], 1, 0
    for item in CFGS[letter]:
        if item == "M":
            block, i = block + 1, 0
        elif item != "LRN":
            i += 1
            names.append(f"conv{block}_{i}")
    return names


def final_map_size(crop_size: int) -> int:
    """Spatial size after the five 2x2/2 max-pools (floor division, like the pools)."""
    size = crop_size
    for _ in range(5):
        size //= 2
    return size
