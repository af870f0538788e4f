import numpy as np
import pytest
import torch
from PIL import Image

from joint_core.preprocess.images import collect_images, expand_paths, load_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _as_float(t):
    return t.float() / 255 if t.dtype == torch.uint8 else t


def test_all_layouts_give_the_same_image(rgb, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    inputs = [str(path), path, Image.fromarray(rgb), rgb, rgb.astype(np.float32) / 255,
              chw, chw.permute(1, 2, 0), chw[None], chw.permute(1, 2, 0)[None],
              torch.from_numpy(rgb), rgb.transpose(2, 0, 1).copy()]
    items = collect_images(inputs)
    assert len(items) == len(inputs)
    for it in items:
        assert it.ok, it.error
        assert it.tensor.shape == (3, 37, 53)
        torch.testing.assert_close(_as_float(it.tensor), chw, atol=1e-6, rtol=0)


def test_batches_are_split_and_named():
    items = collect_images(torch.rand(5, 20, 30, 3))   # ComfyUI layout
    assert [it.source for it in items] == [f"input 0[{i}]" for i in range(5)]
    assert all(it.tensor.shape == (3, 20, 30) for it in items)
    items = collect_images([torch.rand(2, 3, 8, 9), torch.rand(1, 3, 4, 4)])
    assert [it.source for it in items] == ["input 0[0]", "input 0[1]", "input 1[0]"]


def test_modes_are_converted(tmp_path, rgb):
    gray = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], -1)
    cases = {
        "gray.png": Image.fromarray(gray),
        "rgba.png": Image.fromarray(rgba),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "bw.png": Image.fromarray(gray > 128),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        t = load_image(tmp_path / name)
        assert t.shape == (3, 37, 53) and t.dtype == torch.uint8, name
    g = load_image(tmp_path / "gray.png")
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], torch.from_numpy(gray))
    a = load_image(tmp_path / "rgba.png")
    assert torch.equal(a, torch.from_numpy(rgb).permute(2, 0, 1))   # alpha dropped


def test_sixteen_bit_files(tmp_path):
    ramp = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert t.dtype == torch.float32 and t.shape == (3, 30, 40)
    assert abs(float(t.max()) - 1.0) < 1e-6 and float(t.min()) == 0.0
    rgb16 = np.stack([ramp, ramp[::-1], ramp // 2], -1)
    _write_png16(tmp_path / "rgb16.png", rgb16)
    t = load_image(tmp_path / "rgb16.png")
    assert t.shape == (3, 30, 40)
    assert abs(float(_as_float(t).max()) - 1.0) < 1e-2
    items = collect_images(rgb16)   # a uint16 array in memory
    torch.testing.assert_close(items[0].tensor[0], torch.from_numpy(ramp.astype(np.float32) / 65535))


def _write_png16(path, arr):
    """A minimal 16-bit RGB PNG writer (Pillow cannot write this format)."""
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"not an image at all"), "not an image file"),
    (lambda p: p.write_bytes(b""), "not an image file"),
    (lambda p: None, "no such file"),
])
def test_unreadable_files_become_errors(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    (item,) = collect_images([path])
    assert not item.ok and item.tensor is None
    assert str(path) in item.error and message in item.error


def test_truncated_png(tmp_path, rgb):
    path = tmp_path / "trunc.png"
    Image.fromarray(np.tile(rgb, (8, 8, 1))).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (item,) = collect_images(str(path))
    assert not item.ok and "trunc.png" in item.error


@pytest.mark.parametrize("bad,message", [
    (torch.full((3, 8, 8), float("nan")), "NaN"),
    (torch.rand(3, 8, 8) * 255, "looks like 0..255"),
    (torch.rand(3, 8, 8) - 2, "must lie in \\[0, 1\\]"),
    (torch.rand(2, 8, 8), "cannot tell channels"),
    (torch.rand(3, 0, 8), "empty image"),
    (torch.rand(5, 5, 5, 5, 5), "2-D, 3-D or 4-D"),
    (np.zeros((4, 4), dtype=np.complex64), "unsupported array dtype"),
    (np.full((4, 4, 3), 300, dtype=np.int32), "outside 0..255"),
    (12, "unsupported input type int"),
])
def test_bad_arrays_become_errors(bad, message):
    (item,) = collect_images([bad])
    assert not item.ok
    assert item.error.startswith("input 0")
    assert pytest.importorskip("re").search(message, item.error), item.error


def test_one_nan_image_in_a_batch_only_fails_itself():
    batch = torch.rand(4, 3, 8, 8)
    batch[2, 0, 0, 0] = float("nan")
    items = collect_images(batch)
    assert [it.ok for it in items] == [True, True, False, True]
    assert "input 0[2]" in items[2].error


def test_slight_overshoot_is_clamped():
    x = torch.rand(3, 8, 8) * 1.004
    (item,) = collect_images(x)
    assert item.ok and float(item.tensor.max()) <= 1.0


def test_top_level_type_error():
    with pytest.raises(TypeError, match="images must be"):
        collect_images(3.5)
    assert collect_images([]) == []
    assert collect_images(torch.rand(0, 3, 8, 8)) == []


def test_expand_paths(tmp_path, rgb):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    assert [p.split("/")[-1] for p in expand_paths([tmp_path])] == ["a.jpg", "b.png"]
    assert len(expand_paths([tmp_path], recursive=True)) == 3
    assert [p.split("/")[-1] for p in expand_paths([str(tmp_path / "*.png")])] == ["b.png"]
    assert expand_paths([str(tmp_path / "nothing*.png")]) == [str(tmp_path / "nothing*.png")]
