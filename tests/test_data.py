"""hirilib.data: sources fail clearly, the decoded cache is reused, and the device-side
augmentation does what its equations say (crop and flip, CutMix mask and lambda, the
same batch for any number of processes)."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import CLASSES
from hirilib import data as D

# ----------------------------------------------------------------------------- sources


def test_bad_paths_are_one_clear_error(tmp_path):
    with pytest.raises(D.DataError, match="no such folder"):
        D.resolve_source(str(tmp_path / "missing"))
    f = tmp_path / "file.parquet"
    f.write_bytes(b"x")
    with pytest.raises(D.DataError, match="is a file"):
        D.resolve_source(str(f))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(D.DataError, match="no Parquet files for train and validation"):
        D.resolve_source(str(tmp_path / "empty"))
    with pytest.raises(D.DataError, match="160px or 320px"):
        D.resolve_source("imagenette:224px")


def test_unreachable_hub_is_one_clear_error_within_30_s(tmp_path, monkeypatch):
    """Offline, with no local copy: at once (not after the client's retries), one
    message that says the Hub is unreachable and how to use local files."""
    import hirilib.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hirilib.hub, "hub_reachable", lambda timeout=3.0: False)
    t = time.perf_counter()
    with pytest.raises(D.DataUnavailable) as e:
        D.load_data("imagenette", 32, cache_dir=tmp_path)
    assert time.perf_counter() - t < 30
    msg = str(e.value)
    assert "unreachable" in msg and "--data" in msg and "Parquet" in msg
    assert "\n" not in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(D.DataUnavailable, match="HF_HUB_OFFLINE is set"):
        D.load_data("imagenette", 32, cache_dir=tmp_path)


def test_decoded_once_then_read_from_the_cache(parquet_set, tmp_path):
    first = D.load_data(str(parquet_set), 24, cache_dir=tmp_path, progress=False)
    assert first.train_images.shape == (64, 3, 24, 24)
    assert first.train_images.dtype == torch.uint8
    assert first.classes == CLASSES and first.val_labels.numel() == 32
    assert torch.bincount(first.train_labels).tolist() == [16] * 4
    second = D.load_data(str(parquet_set), 24, cache_dir=tmp_path, progress=False)
    assert second.cache_path == first.cache_path
    assert torch.equal(second.train_images, first.train_images)
    assert torch.equal(second.val_labels, first.val_labels)
    # another size or subset is another cache entry; nothing left half-written
    other = D.load_data(
        str(parquet_set), 16, train_subset=8, cache_dir=tmp_path, progress=False
    )
    assert other.cache_path != first.cache_path and other.train_images.shape[0] == 8
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pt", ".pt"]


def test_decode_resize_takes_the_centre_square():
    """Shorter side to the size, then the centre: a 2:1 image keeps its middle half."""
    import io

    from PIL import Image

    left, mid, right = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    im = Image.new("RGB", (64, 32))
    for x in range(64):
        for y in range(32):
            im.putpixel((x, y), left if x < 16 else right if x >= 48 else mid)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = D.decode_resize(buf.getvalue(), 16)
    assert out.shape == (3, 16, 16)
    assert (out[1, :, 2:-2] > 200).all() and (out[0, :, 2:-2] < 50).all()


# ------------------------------------------------------------------------- augmentation


def test_crop_resize_identity_and_flip():
    """The full box at the centre is the image itself; flip -1 mirrors it exactly."""
    x = torch.rand(2, 3, 8, 8)
    full = torch.tensor([[1.0, 1.0, 0.5, 0.5, 1.0], [1.0, 1.0, 0.5, 0.5, -1.0]])
    out = D.crop_resize(x, full, 8)
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-1), atol=1e-5, rtol=0)
    # a box on a ramp: bilinear sampling of a linear image is exact, so the output is
    # the ramp between the box's edges.  Box: width 1/2 centred at x = 1/4 (the left
    # half); output pixel i sits at source coordinate (2i - 1) / 4 (pixel centres,
    # align_corners=False): 2 x upsampling of columns 0..3.
    ramp = torch.arange(8.0).expand(1, 1, 8, 8).contiguous()
    left = torch.tensor([[0.5, 1.0, 0.25, 0.5, 1.0]])
    out = D.crop_resize(ramp, left, 8)[0, 0, 0]
    want = (2 * torch.arange(8.0) - 1) / 4
    torch.testing.assert_close(out[1:], want[1:], atol=1e-5, rtol=0)


def test_rrc_params_stay_inside_the_image():
    p = D.rrc_params(4096, torch.Generator().manual_seed(0), scale=(0.08, 1.0))
    w, h, cx, cy, flip = p.unbind(1)
    assert (w <= 1).all() and (h <= 1).all() and (w > 0).all()
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    assert set(flip.tolist()) == {-1.0, 1.0}
    assert abs((flip < 0).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize(
    "lam, cy, cx",
    [(0.3, 16, 16), (0.7, 0, 0), (0.5, 31, 5), (0.9, 16, 31), (0.05, 3, 28)],
)
def test_cutmix_mask_and_lambda_agree(lam, cy, cx):
    """lambda is the fraction of the image that is the sample's own (after clipping)."""
    mask, got = D.cutmix_mask(lam, 32, 32, cy, cx)
    assert mask.shape == (1, 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert got == pytest.approx(mask.mean().item(), abs=1e-7)
    y0, y1, x0, x1 = D.cutmix_box(lam, 32, 32, cy, cx)
    assert (mask[..., y0:y1, x0:x1] == 0).all() and mask.sum() == 32 * 32 - (
        y1 - y0
    ) * (x1 - x0)
    if (
        0 < cy - 16 * (1 - lam) ** 0.5
        and cy + 16 * (1 - lam) ** 0.5 < 32
        and 0 < cx - 16 * (1 - lam) ** 0.5
        and cx + 16 * (1 - lam) ** 0.5 < 32
    ):
        # unclipped: close to the drawn lambda
        assert got == pytest.approx(lam, abs=0.08)


def test_mixed_batch_is_the_mask_applied(parquet_set, tmp_path):
    """x = M x_a + (1 - M) x_b with x_b the reversed batch; the target is the same
    mixture of the smoothed labels and is a distribution; over many steps both Mixup and
    CutMix occur."""
    data = D.load_data(str(parquet_set), 32, cache_dir=tmp_path, progress=False)
    aug = D.BatchAugment(data, 32, 4, seed=1, label_smoothing=0.1)
    idx = D.epoch_order(1, 0, 64)[:16]
    modes = set()
    for step in range(12):
        b = aug(idx, 0, step)
        modes.add(b.mode)
        torch.testing.assert_close(b.x_b, b.x_a.flip(0))
        torch.testing.assert_close(b.x, b.mask * b.x_a + (1 - b.mask) * b.x_b)
        assert b.lam == pytest.approx(b.mask.mean().item(), abs=1e-6)
        ya = D.smooth_one_hot(b.labels, 4, 0.1)
        torch.testing.assert_close(b.target, b.lam * ya + (1 - b.lam) * ya.flip(0))
        torch.testing.assert_close(b.target.sum(1), torch.ones(16))
    assert modes == {"mixup", "cutmix"}


def test_a_batch_does_not_depend_on_the_number_of_processes(parquet_set, tmp_path):
    """Rank r of N gets slice r of exactly the batch one process gets, partners too:
    the reason N GPUs train the same model as one."""
    data = D.load_data(str(parquet_set), 32, cache_dir=tmp_path, progress=False)
    aug = D.BatchAugment(data, 32, 4, seed=3)
    idx = D.epoch_order(3, 2, 64)[:16]
    for step in range(4):
        one = aug(idx, 2, step)
        parts = [aug(idx, 2, step, rank=r, world=4) for r in range(4)]
        for name in ("x", "x_a", "x_b", "target", "labels"):
            torch.testing.assert_close(
                torch.cat([getattr(p, name) for p in parts]),
                getattr(one, name),
                atol=1e-6,
                rtol=0,
            )
        assert not parts[0].partner_is_flip and one.partner_is_flip


def test_the_data_order_is_a_function_of_seed_and_epoch():
    a, b = D.epoch_order(0, 1, 100), D.epoch_order(0, 1, 100)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, D.epoch_order(0, 2, 100))
    assert not torch.equal(a, D.epoch_order(1, 1, 100))


def test_eval_view_is_the_whole_image():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    same = D.eval_images(x, 16, torch.device("cpu"))
    torch.testing.assert_close(same, D.normalize(x.float()))
    assert D.eval_images(x, 8, torch.device("cpu")).shape == (2, 3, 8, 8)


# ------------------------------------------------------- bad files, a damaged cache


def _write(folder, columns):
    import datasets

    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns).to_parquet(
            str(folder / split / f"{split}-0.parquet")
        )
    return folder


def test_a_wrong_schema_says_which_columns_are_expected(tmp_path):
    folder = _write(tmp_path / "d", {"img": [b"x", b"y"], "y": [0, 1]})
    with pytest.raises(D.DataError, match="expected an 'image' column"):
        D.load_data(str(folder), 16, cache_dir=tmp_path / "c", progress=False)


def test_a_corrupt_image_names_its_row(parquet_set, tmp_path):
    import datasets
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(parquet_set, folder)
    path = next((folder / "train").glob("*.parquet"))
    ds = datasets.Dataset.from_parquet(str(path))
    ds = ds.cast_column("image", datasets.Image(decode=False))
    rows = ds.to_dict()
    rows["image"][3] = {"bytes": b"not an image", "path": None}
    datasets.Dataset.from_dict(rows, features=ds.features).to_parquet(str(path))
    with pytest.raises(D.DataError, match="train split's image at row 3"):
        D.load_data(str(folder), 16, cache_dir=tmp_path / "c", progress=False)


def test_the_cache_is_keyed_on_the_files_content(parquet_set, tmp_path):
    """A file changed in place with its size and modification time kept is another
    source (its bytes are hashed), so its images are decoded again."""
    import os
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(parquet_set, folder)
    before = D.resolve_source(str(folder)).identity
    path = next((folder / "validation").glob("*.parquet"))
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert D.resolve_source(str(folder)).identity != before


@pytest.mark.parametrize("damage", ["labels", "label_range", "classes", "bytes"])
def test_a_damaged_cache_is_rebuilt_never_trusted(damage, parquet_set, tmp_path):
    first = D.load_data(str(parquet_set), 24, cache_dir=tmp_path, progress=False)
    path = first.cache_path
    doc = torch.load(path, weights_only=True)
    if damage == "labels":  # 5 labels for 64 images
        doc["train_labels"] = doc["train_labels"][:5]
    elif damage == "label_range":  # labels 50.. for 4 classes
        doc["train_labels"] = doc["train_labels"] + 50
    elif damage == "classes":
        doc["classes"] = None
    if damage == "bytes":  # flipped bytes inside the images: the zip's CRCs catch it
        raw = bytearray(open(path, "rb").read())
        i = raw.find(doc["train_images"][10].numpy().tobytes()[:256])
        raw[i : i + 64] = bytes(b ^ 0xFF for b in raw[i : i + 64])
        open(path, "wb").write(bytes(raw))
    else:
        torch.save(doc, path)
    with pytest.warns(UserWarning, match="rebuilding the damaged data cache"):
        again = D.load_data(str(parquet_set), 24, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.train_labels, first.train_labels)
    assert torch.equal(again.train_images, first.train_images)
    assert again.classes == first.classes
