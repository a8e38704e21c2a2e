"""PNG files: the one writer (fixed options, no metadata) and the modes this project reads.

Writing: equal pixels give equal bytes (synthetic frames and masks, exported
predictions). Reading: :data:`FRAME_MODES` and :data:`MASK_MODES` are the image modes
the loaders (:mod:`avsrobust.frame_cache`) decode, and exactly what the input check
(:mod:`avsrobust.validate`) accepts, so a file that passes the check also loads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError, regular_file

#: Frame modes read (converted to RGB).
FRAME_MODES = ("RGB", "RGBA", "P", "L", "LA")
#: Mask modes read: palette index, grey level or any colour channel nonzero = foreground.
MASK_MODES = ("1", "L", "LA", "I", "I;16", "P", "PA", "RGB", "RGBA")


def png_bytes(array: np.ndarray) -> bytes:
    """PNG with fixed options and no metadata: uint8 [H, W, 3] -> RGB, [H, W] -> L."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def open_image(path: Path, what: str = "image", modes: tuple[str, ...] | None = None):
    """Fully decoded image, or InputError naming the file (missing, truncated, not an
    image, or a mode outside ``modes``). Only regular files are opened: a FIFO would block."""
    regular_file(path, f"{what} file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not later
    except FileNotFoundError:
        raise InputError(path, f"{what} file is missing") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"unreadable {what} ({exc})") from None
    if modes is not None and img.mode not in modes:
        raise InputError(path, f"{what} has mode {img.mode}, expected one of {list(modes)}")
    return img
