"""Peak memory of cleaning one upload stays under the stated bound
(annotation.images.PEAK_BYTES_PER_PIXEL*): measured as the peak resident set size of a
fresh process above its size just before the clean (bench/upload_memory.py). The 16-bit
grey PNG at 59.5 megapixels took +1.5 GB when it went through float64."""

from __future__ import annotations

import pytest

from annotation import images
from bench import upload_memory


@pytest.mark.parametrize("kind, size", [("grey16", upload_memory.DEFAULT_SIZE), ("rgba", (4000, 3000))])
def test_cleaning_an_upload_stays_under_the_memory_bound(tmp_path, kind, size):
    path = upload_memory.make(kind, *size, tmp_path)
    result = upload_memory.measure(path)
    pixels = size[0] * size[1]
    assert (result["width"], result["height"]) == size
    bound = upload_memory.bound_bytes(images, kind == "grey16", pixels)
    assert result["peak_rss_delta_mb"] * 2**20 <= bound, result


def test_sixteen_bit_strips_match_the_whole_image_rounding(monkeypatch):
    """The strip-wise integer conversion gives round(v * 255 / 65535) for every value,
    across strip borders (a strip is _STRIP_PIXELS pixels)."""
    import numpy as np
    from PIL import Image

    monkeypatch.setattr(images, "_STRIP_PIXELS", 1000)  # 3 rows a strip: many borders
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    grey = images._high_bit_to_grey(source)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(np.asarray(grey), expected)
    # 32-bit int: negative and above-16-bit values clip; all <= 255 stays as is.
    ints = Image.fromarray(np.array([[-5, 0, 70000, 65535]], dtype=np.int32))
    assert np.asarray(images._high_bit_to_grey(ints)).tolist() == [[0, 0, 255, 255]]
    small = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))
    assert np.asarray(images._high_bit_to_grey(small)).tolist() == [[0, 7, 255]]
