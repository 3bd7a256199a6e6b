"""The training stream that makes --resume exact: PositionedDataset and PositionSampler, with
Detectron2's own aspect-ratio grouping, on images of mixed aspect ratios and with LVIS's repeat
factors (the end-to-end bit-identical resume is in tests/engine/test_reliability.py)."""
import itertools

import numpy as np
import torch

from longtailseg.data.resumable import PositionedDataset, PositionSampler

from detectron2.data.common import AspectRatioGroupedDataset


def _dicts(n=13):
    rng = np.random.default_rng(0)
    return [{"image_id": i, "width": int(w), "height": int(h)}
            for i, (w, h) in enumerate(rng.integers(20, 60, size=(n, 2)))]


def _mapper(d):
    return {"image_id": d["image_id"], "width": d["width"], "height": d["height"],
            "draw": float(np.random.rand()), "torch_draw": float(torch.rand(()))}


def _batches(dataset, sampler, count, batch_size):
    stream = (dataset[p] for p in sampler)
    return list(itertools.islice(iter(AspectRatioGroupedDataset(stream, batch_size)), count))


def test_a_resumed_stream_continues_the_uninterrupted_one_batch_for_batch():
    repeat_factors = [1.0, 2.5, 1.0, 3.2, 1.0, 1.7, 1.0, 1.0, 2.0, 1.0, 1.1, 1.0, 4.0]
    for factors in (None, repeat_factors):
        for rank in (0, 1):
            dataset = PositionedDataset(_dicts(), _mapper, seed=5, repeat_factors=factors)
            full = _batches(dataset, PositionSampler(rank, 2), 40, batch_size=3)
            for k in (1, 7, 23):
                resumed_sampler = PositionSampler(rank, 2)
                fresh = PositionedDataset(_dicts(), _mapper, seed=5, repeat_factors=factors)
                resumed_sampler.resume_after(k, 3, fresh, grouped=True)
                assert _batches(fresh, resumed_sampler, 40 - k, batch_size=3) == full[k:], (factors, rank, k)
            # grouping holds images back: resuming at k batches' worth of positions would not do
            naive_differs = []
            for k in (1, 7, 23):
                naive = PositionSampler(rank, 2)
                naive.resume_after(k, 3)
                naive_differs.append(_batches(PositionedDataset(_dicts(), _mapper, seed=5, repeat_factors=factors),
                                              naive, 40 - k, batch_size=3) != full[k:])
            assert any(naive_differs)


def test_each_sample_is_a_function_of_seed_and_position_only():
    a = PositionedDataset(_dicts(), _mapper, seed=5)
    b = PositionedDataset(_dicts(), _mapper, seed=5)
    assert [a[p] for p in range(30)] == [b[p] for p in reversed(range(30))][::-1]
    assert [a[p] for p in range(30)] != [PositionedDataset(_dicts(), _mapper, seed=6)[p] for p in range(30)]
    state = torch.get_rng_state()
    np_state = np.random.get_state()
    a[3]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNGs do not move
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_repeat_factors_give_floor_or_ceil_copies_per_epoch():
    factors = [1.0, 2.5, 1.0, 3.2]
    dataset = PositionedDataset(_dicts(4), _mapper, seed=1, repeat_factors=factors)
    copies = []
    for epoch in range(200):
        order = dataset._epoch_order(epoch)
        copies.append(np.bincount(order, minlength=4))
    copies = np.array(copies)
    assert (copies[:, 0] == 1).all() and (copies[:, 2] == 1).all()
    assert set(copies[:, 1]) == {2, 3} and set(copies[:, 3]) == {3, 4}
    assert abs(copies[:, 1].mean() - 2.5) < 0.15 and abs(copies[:, 3].mean() - 3.2) < 0.15



class _Positions(torch.utils.data.Dataset):
    def __getitem__(self, position):
        return {"position": position, "width": 2, "height": 1}  # one aspect-ratio bucket


def test_the_loader_returns_the_samplers_order_with_any_number_of_workers():
    """Detectron2's train loader over a PositionStream, as data/build.py makes it: with and
    without aspect-ratio grouping, batches hold the sampler's positions in order, which a resumed
    run replays (Detectron2 main splits a sampler among workers by batch, v0.6 by image; with
    grouping, main's split alone would interleave two batches)."""
    from detectron2.data import build_detection_train_loader

    from longtailseg.data.resumable import PositionStream

    for grouped in (True, False):
        for workers in (0, 2, 3):
            stream = PositionStream(_Positions(), PositionSampler(0, 1), unit=1 if grouped else 4)
            loader = build_detection_train_loader(dataset=stream, sampler=None, mapper=None, total_batch_size=4,
                                                  aspect_ratio_grouping=grouped, num_workers=workers)
            got = [d["position"] for batch in itertools.islice(iter(loader), 6) for d in batch]
            assert got == list(range(24)), (grouped, workers, got)
