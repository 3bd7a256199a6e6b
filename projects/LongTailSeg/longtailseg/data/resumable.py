"""A training data stream that a resumed run replays exactly.

Detectron2's ``TrainingSampler`` draws its shuffling seed at random unless one is passed, restarts
at the first image on ``--resume``, and data-loader workers seed their augmentations from the
main process's RNG when they start. A run resumed from a checkpoint therefore trained on other
images, cropped and flipped differently, than the uninterrupted run.

Here every training sample is a pure function of ``(seed, position)``, where position ``p`` is
the p-th image of the run over all processes:

* :class:`PositionSampler` yields this process's positions (``rank, rank + world, ...``) and can
  start anywhere, including with the images that aspect-ratio grouping held back;
* :class:`PositionedDataset` maps a position to an image (one permutation of the dataset per
  epoch, drawn from ``seed + epoch``) and maps it with the RNGs seeded from ``(seed, position)``,
  so the same position gives the same crop and flip in any worker of any run.

Resuming after ``k`` iterations then means starting the sampler where the uninterrupted run stood
after its ``k``-th batch: :meth:`PositionSampler.resume_after` replays Detectron2's
``AspectRatioGroupedDataset`` bucketing (an image joins bucket 0 when wider than tall, else 1; a
full bucket is a batch) over the aspect ratios of the images, so the images waiting in a bucket at
the checkpoint come again first, in their order.

With data-loader workers, :class:`PositionStream` splits the positions among them so that the
loader returns them in the sampler's order, on every Detectron2 version (whose own splitting
differs: one image at a time in v0.6, one batch at a time on main, which interleaves the images
of two batches when aspect-ratio grouping takes them one by one).
"""
import bisect
import contextlib
import itertools
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from detectron2.data.common import DatasetFromList
from detectron2.utils import comm


@contextlib.contextmanager
def seeded_random_state(seed):
    """Python, NumPy and torch RNGs seeded with ``seed`` inside, restored on exit (the mapper
    runs in the main process when NUM_WORKERS is 0, where the model's RNG must not move)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def sample_seed(seed, position):
    """A 63-bit seed per (run seed, position); distinct positions get unrelated streams."""
    return int(np.random.SeedSequence([seed, position]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class PositionedDataset(Dataset):
    """Dataset dicts addressed by run position: the run is a sequence of epochs, each a shuffled
    order of the images drawn from ``seed + epoch``, and ``dataset[p]`` is the image at position
    ``p`` of that sequence, mapped by ``mapper`` under RNGs seeded from ``(seed, p)``.

    With ``repeat_factors`` (LVIS's repeat-factor sampling, Gupta et al. 2019, as Detectron2's
    RepeatFactorTrainingSampler draws it) an epoch holds image i ``floor(r_i)`` times plus once more
    with probability ``r_i - floor(r_i)``, so epochs differ in length.
    """

    def __init__(self, dataset_dicts, mapper, seed, shuffle=True, repeat_factors=None):
        # Serialized, as Detectron2 keeps dataset dicts, so that workers do not copy them.
        self.dicts = DatasetFromList(dataset_dicts, copy=False, serialize=True)
        self.mapper = mapper
        self.shuffle = shuffle
        self.repeat_factors = None if repeat_factors is None else torch.as_tensor(repeat_factors, dtype=torch.float32)
        self.reseed(seed)

    def reseed(self, seed):
        """Make it the stream of run seed ``seed`` (a resumed run whose SEED was drawn at random
        continues with its checkpoint's); before a loader iterator is made."""
        self.seed = int(seed)
        self._epoch_starts = [0]  # first position of epoch e, for the epochs drawn so far
        self._epoch, self._order = None, None

    def __len__(self):
        return len(self.dicts)

    def _epoch_order(self, epoch):
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.repeat_factors is None:
            images = torch.arange(len(self.dicts))
        else:
            whole = torch.floor(self.repeat_factors)
            extra = torch.rand(len(self.repeat_factors), generator=generator) < self.repeat_factors - whole
            images = torch.repeat_interleave(torch.arange(len(self.dicts)), (whole + extra).long())
        if self.shuffle:
            images = images[torch.randperm(len(images), generator=generator)]
        return images.tolist()

    def _epoch_of(self, position):
        if self.repeat_factors is None:  # every epoch holds each image once
            return divmod(position, len(self.dicts))
        while position >= self._epoch_starts[-1]:  # draw epochs up to the one holding position
            epoch = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + len(self._epoch_order(epoch)))
        epoch = bisect.bisect_right(self._epoch_starts, position) - 1
        return epoch, position - self._epoch_starts[epoch]

    def index(self, position):
        epoch, offset = self._epoch_of(int(position))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self._epoch_order(epoch)
        return self._order[offset]

    def is_wide(self, index):
        """The bucket AspectRatioGroupedDataset puts image ``index`` in (0: wider than tall),
        from its dict or, as the mapper does, from the image file (header only)."""
        record = self.dicts[index]
        if "width" in record and "height" in record:
            return record["width"] > record["height"]
        with Image.open(record["file_name"]) as image:
            width, height = image.size
        return width > height

    def __getitem__(self, position):
        dataset_dict = self.dicts[self.index(position)]  # a fresh copy: the mapper changes it
        with seeded_random_state(sample_seed(self.seed, position)):
            return self.mapper(dataset_dict)


class PositionSampler(Sampler):
    """Infinite positions of this process: ``rank + world * j`` for ``j = start, start + 1, ...``,
    after the ``pending`` positions a resumed run must see first."""

    def __init__(self, rank=None, world_size=None):
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.start = 0
        self.pending = []

    def __iter__(self):
        yield from self.pending
        yield from itertools.count(self.rank + self.world_size * self.start, self.world_size)

    def resume_after(self, num_batches, batch_size, dataset=None, grouped=False):
        """Start where a run stood after ``num_batches`` batches of ``batch_size`` images of this
        process. With aspect-ratio grouping, ``dataset`` (a :class:`PositionedDataset`) gives the
        images' aspect ratios and the grouping is replayed."""
        self.pending = []
        if not grouped:
            self.start = num_batches * batch_size
            return
        buckets, batches, j, wide = ([], []), 0, 0, {}
        while batches < num_batches:
            position = self.rank + self.world_size * j
            index = dataset.index(position)
            if index not in wide:
                wide[index] = dataset.is_wide(index)
            bucket = buckets[0 if wide[index] else 1]
            bucket.append(position)
            if len(bucket) == batch_size:
                bucket.clear()
                batches += 1
            j += 1
        self.start = j
        self.pending = sorted(buckets[0] + buckets[1])  # the order they were drawn in


class PositionStream(IterableDataset):
    """``dataset[p]`` for the positions ``p`` of ``sampler``, in the sampler's order however many
    data-loader workers share it. PyTorch's DataLoader takes one fetch from each worker in turn (a
    fetch is one image with aspect-ratio grouping, a batch without), so worker ``w`` of ``W``
    takes the units of ``unit`` consecutive positions numbered ``w, w + W, w + 2W, ...``; ``unit``
    is 1 with aspect-ratio grouping, else the batch size."""

    def __init__(self, dataset, sampler, unit):
        self.dataset, self.sampler, self.unit = dataset, sampler, int(unit)

    def __iter__(self):
        positions = iter(self.sampler)
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            step = self.unit * worker.num_workers
            positions = (p for i, p in enumerate(positions)
                         if (i % step) // self.unit == worker.id)
        for position in positions:
            yield self.dataset[position]
