"""Splits, subsets, augmentation and loaders on real and generated data."""
import numpy as np
import torch
from PIL import Image

from nnstudy.data import device, pool, sources
from nnstudy.spec import resolve


def test_halves_split_is_disjoint_stratified_and_swaps():
    y = torch.arange(100) % 4
    a, b = pool.split(y, "halves", 0.1, False, seed=7)
    b2, a2 = pool.split(y, "halves", 0.1, True, seed=7)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == 100
    assert torch.bincount(y[a]).tolist() == [12, 12, 12, 12]
    c, _ = pool.split(y, "halves", 0.1, False, seed=8)
    assert not torch.equal(a, c)  # the seed draws the halves


def test_holdout_split_takes_the_fraction_of_each_class():
    y = torch.tensor([0] * 50 + [1] * 30)
    train, val = pool.split(y, "holdout", 0.2, False, seed=0)
    assert torch.bincount(y[val]).tolist() == [10, 6]
    assert sorted(train.tolist() + val.tolist()) == list(range(80))


def test_stratified_subset_is_balanced_and_fixed():
    y = torch.arange(1000) % 10
    s1 = pool.stratified_take(y, 95, torch.Generator().manual_seed(0))
    s2 = pool.stratified_take(y, 95, torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and len(s1) == 95
    assert sorted(torch.bincount(y[s1]).tolist()) == [9] * 5 + [10] * 5


def test_crop_shifts_within_padding():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    out = device.crop_at(x, 1, torch.tensor([[[0], [2]], [[1], [0]]]))
    # sample 0 shifted down a row (a zero row on top), sample 1 up a row and right a column
    assert torch.equal(out[0, 0, 1:], x[0, 0, :3]) and not out[0, 0, 0].any()
    assert torch.equal(out[1, 0, :3, 1:], x[1, 0, 1:, :3]) and not out[1, 0, 3].any() and not out[1, 0, :, 0].any()
    assert out.shape == x.shape
    for i in range(2):  # every crop is a window of the zero-padded image
        padded = torch.nn.functional.pad(x[i, 0], (1, 1, 1, 1))
        windows = [padded[r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(out[i, 0], w) for w in windows)


def test_crop_is_each_samples_window_of_its_padded_image():
    """The one-gather crop against slicing each sample's zero-padded image at its offsets."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 6, generator=g)
    shift = torch.randint(0, 5, (2, 16, 1), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    expected = torch.stack([padded[i, :, dy:dy + 8, dx:dx + 6] for i, (dy, dx) in enumerate(shift[:, :, 0].T.tolist())])
    assert torch.equal(device.crop_at(x, 2, shift), expected)


def test_imagefolder_pool_is_decoded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSTUDY_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(
                    tmp_path / "img" / split / cls / f"{i}.png")
    x, y, test_x, _ = sources.imagefolder(root=str(tmp_path / "img"))
    assert x.shape == (6, 3, 6, 6) and x.dtype == torch.uint8 and test_x.shape == (6, 3, 6, 6)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "img" / "train" / "cat" / "0.png"))
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), first)
    assert len(list((tmp_path / "cache").glob("imagefolder-train-*.pt"))) == 1


def test_training_split_statistics_normalise(shared_data, monkeypatch):
    spec = resolve({"data": {"name": "mnist", "root": str(shared_data), "train_size": 2000, "test_size": 500}})
    d = device.build(spec["data"], seed=0, device=torch.device("cpu"))
    x = torch.cat([xb for xb, _ in d.batches("train", 512)])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    assert len(d.train_idx) == 1800 and len(d.val_idx) == 200 and len(d.test_y) == 500


def test_each_split_is_normalised_by_its_own_statistics(shared_data):
    """A process keeps the statistics and the normalised pools per data spec and seed
    (data.device._NORMALISATIONS, _NORMALISED), which a job's variants share: another seed or
    split never gets them."""
    base = {"name": "mnist", "root": str(shared_data), "train_size": 2000, "test_size": 500}
    means = []
    for data, seed in [(base, 0), (base, 1), ({**base, "val_fraction": 0.3}, 0), (base, 0)]:
        spec = resolve({"data": data})["data"]
        d = device.build(spec, seed=seed, device=torch.device("cpu"))
        train, test = device.pools(spec)
        own = train.x[d.train_idx].float().div_(255)
        mean, std = own.mean((0, 2, 3)), own.std((0, 2, 3))
        assert torch.equal(d.mean.flatten(), mean) and torch.equal(d.std.flatten(), std)
        for raw, normalised in ((train, d.train_x), (test, d.test_x)):
            assert torch.equal(normalised, raw.x.float().div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1)))
        means.append(d.mean.item())
    assert len(set(means[:3])) == 3 and means[3] == means[0]


def test_an_epochs_augmentation_is_drawn_as_batch_by_batch_draws_were():
    """Flips and crops are drawn before the epoch's first step (no host copy per step), in the
    order per-batch drawing used: the shuffle, then per batch its flips and its crop offsets."""
    d = device.Data(train_x=torch.rand(10, 1, 4, 4), train_y=torch.zeros(10, dtype=torch.int64),
                  test_x=torch.rand(2, 1, 4, 4), test_y=torch.zeros(2, dtype=torch.int64),
                  train_idx=torch.arange(10), val_idx=torch.arange(0), classes=1, mean=None, std=None,
                  resize=None, crop=1, flip=True, images=True)
    got = torch.cat([x for x, _ in d.batches("train", 4, torch.Generator().manual_seed(5))])
    gen = torch.Generator().manual_seed(5)
    idx, expected = torch.randperm(10, generator=gen), []
    for start in range(0, 10, 4):
        x = d.train_x[idx[start:start + 4]]
        flip = torch.rand(len(x), generator=gen) < 0.5
        shift = torch.randint(0, 3, (2, len(x), 1), generator=gen)
        expected.append(device.crop_at(torch.where(flip[:, None, None, None], x.flip(3), x), 1, shift))
    assert torch.equal(got, torch.cat(expected))
