"""The training sampler across torchrun ranks and epochs: ranks split each step's frames, and every
epoch is shuffled anew."""
from vla.data.dataset import EpochSampler


def test_ranks_split_an_epoch_without_overlap_and_cover_every_frame():
    """With world=2 each rank must train on its own half of every global batch; overlapping batches would
    double-count frames and leave others unseen for the whole epoch."""
    n, batch = 12, 3
    ranks = [EpochSampler(n, batch, seed=5, rank=r, world=2) for r in range(2)]
    seen = [[], []]
    for _ in range(n // (batch * 2)):  # one epoch: 2 global batches of 6
        for r, sampler in enumerate(ranks):
            step = sampler.next_batch()
            assert len(step) == batch
            seen[r] += step
    assert all(s.epoch == 0 for s in ranks)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(n))


def test_each_epoch_has_its_own_order():
    """Epoch 1 must be reshuffled, not a replay of epoch 0's batch order."""
    sampler = EpochSampler(10, 5, seed=3)
    epoch0 = sampler.next_batch() + sampler.next_batch()
    epoch1 = sampler.next_batch() + sampler.next_batch()
    assert sampler.epoch == 1
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
