"""Version strings of runtimes (TensorRT, TensorRT-RTX, ...) as comparable tuples: the one parser."""
from __future__ import annotations


def parse_version(text: object) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); a pre-release or local part ends it: '11.0.0rc1' -> (11, 0, 0),
    '2.5.1+cu121' -> (2, 5, 1); nothing numeric ('garbage', '') -> ()."""
    parts: list[int] = []
    for piece in str(text).strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):  # '0rc1': the release part ends here
            break
    return tuple(parts)


def version_label(text: object, parts: int = 3) -> str:
    """The first ``parts`` numbers of a version, dotted ('10.3.0.30' -> '10.3.0'); the text itself if none."""
    numbers = parse_version(text)
    return ".".join(map(str, numbers[:parts])) if numbers else str(text)
