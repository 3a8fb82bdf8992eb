"""CCC, P, masked MSE, the CCC loss and the streaming accumulator, against independent numpy."""
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maven_fast.metrics import CCCAccumulator, ccc, ccc_loss, masked_mse, va_metrics


def numpy_ccc(x, y) -> float:
    """Lin (1989), population moments, float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return 2 * cov / (x.var() + y.var() + (mx - my) ** 2)


def random_pair(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 2, generator=g) * 2 - 1
    pred = 0.6 * target + 0.3 * torch.randn(n, 2, generator=g) + 0.1
    return pred, target


def test_ccc_equals_numpy_float64():
    pred, target = random_pair()
    for k in range(2):
        assert ccc(pred[:, k], target[:, k]) == pytest.approx(numpy_ccc(pred[:, k].numpy(), target[:, k].numpy()),
                                                              rel=1e-12)


def test_ccc_is_computed_in_float64_from_float32_inputs():
    pred, target = random_pair(n=20000, seed=1)
    x, y = pred[:, 0].numpy(), target[:, 0].numpy()
    assert ccc(pred[:, 0], target[:, 0]) == pytest.approx(numpy_ccc(x.astype(np.float64), y.astype(np.float64)),
                                                          rel=1e-12)


def test_ccc_of_identical_series_is_one():
    x = torch.randn(100)
    assert ccc(x, x.clone()) == pytest.approx(1.0, abs=1e-15)


def test_constant_series_are_defined_and_never_nan():
    varying, constant = torch.randn(50), torch.full((50,), 0.3)
    assert ccc(constant, constant.clone()) == 1.0
    assert ccc(constant, torch.full((50,), -0.2)) == 0.0
    assert ccc(constant, varying) == 0.0
    assert ccc(varying, constant) == 0.0
    acc = CCCAccumulator()
    acc.update(torch.full((50, 2), 0.3), torch.full((50, 2), 0.3))
    assert acc.ccc_per_output() == [1.0, 1.0]


def test_invalid_frames_are_ignored():
    pred, target = random_pair(n=60)
    mask = torch.rand(60) > 0.3
    pred_garbage, target_garbage = pred.clone(), target.clone()
    pred_garbage[~mask] = 1e6
    target_garbage[~mask] = -5.0  # Aff-Wild2's "invalid" label
    expected = numpy_ccc(pred[mask, 1].numpy(), target[mask, 1].numpy())
    assert ccc(pred_garbage[:, 1], target_garbage[:, 1], mask) == pytest.approx(expected, rel=1e-12)
    metrics = va_metrics(pred_garbage.view(3, 20, 2), target_garbage.view(3, 20, 2), mask.view(3, 20))
    assert metrics.ccc_arousal == pytest.approx(expected, rel=1e-10)
    assert metrics.count == int(mask.sum())


def test_no_valid_frame_is_an_error():
    with pytest.raises(ValueError, match="no valid frames"):
        ccc(torch.randn(5), torch.randn(5), torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no valid frames"):
        CCCAccumulator().compute()


def test_va_metrics_p_and_mse():
    pred, target = random_pair()
    m = va_metrics(pred, target)
    p, t = pred.double().numpy(), target.double().numpy()
    assert m.ccc_valence == pytest.approx(numpy_ccc(p[:, 0], t[:, 0]), rel=1e-10)
    assert m.ccc_arousal == pytest.approx(numpy_ccc(p[:, 1], t[:, 1]), rel=1e-10)
    assert m.p == pytest.approx((m.ccc_valence + m.ccc_arousal) / 2)
    assert m.mse == pytest.approx(((p - t) ** 2).mean(), rel=1e-10)
    assert m.as_dict()["count"] == 500


def test_streaming_and_merging_equal_one_pass():
    pred, target = random_pair(n=300)
    mask = torch.rand(300) > 0.1
    whole = va_metrics(pred, target, mask)
    streamed, first, second = CCCAccumulator(), CCCAccumulator(), CCCAccumulator()
    for part in torch.split(torch.arange(300), 37):
        streamed.update(pred[part], target[part], mask[part])
    first.update(pred[:100], target[:100], mask[:100])
    second.update(pred[100:], target[100:], mask[100:])
    merged = first.merge(second).compute()
    for result in (streamed.compute(), merged):
        assert result.ccc_valence == pytest.approx(whole.ccc_valence, rel=1e-12)
        assert result.ccc_arousal == pytest.approx(whole.ccc_arousal, rel=1e-12)
        assert result.count == whole.count


def test_masked_mse():
    pred, target = random_pair(n=40)
    mask = torch.rand(40) > 0.5
    expected = ((pred[mask].double() - target[mask].double()) ** 2).mean().item()
    assert masked_mse(pred, target, mask).item() == pytest.approx(expected, rel=1e-6)
    assert masked_mse(pred, target, torch.zeros(40, dtype=torch.bool)).item() == 0.0


def test_ccc_loss_is_one_minus_mean_ccc_and_differentiable():
    pred, target = random_pair(n=64)
    pred = pred.double().requires_grad_()
    loss = ccc_loss(pred, target.double(), eps=0.0)
    expected = 1 - (ccc(pred[:, 0], target[:, 0]) + ccc(pred[:, 1], target[:, 1])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    mask = torch.rand(16) > 0.3
    small = pred[:16].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: ccc_loss(p, target[:16].double(), mask), (small,))
    constant = torch.zeros(8, 2, requires_grad=True)
    value = ccc_loss(constant, torch.zeros(8, 2))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(constant.grad).all()


def _rank_worker(rank: int, world: int, init_file: str, pred, target, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    acc = CCCAccumulator()
    acc.update(pred[rank::world], target[rank::world])
    acc.all_reduce_()
    if rank == 0:
        torch.save(acc.sums, out_file)
    dist.destroy_process_group()


def test_all_reduce_sums_over_processes(tmp_path):
    pred, target = random_pair(n=101)
    out_file = str(tmp_path / "sums.pt")
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), pred, target, out_file), nprocs=2, join=True)
    reduced = CCCAccumulator()
    reduced.sums = torch.load(out_file)
    whole = va_metrics(pred, target)
    assert reduced.compute().ccc_valence == pytest.approx(whole.ccc_valence, rel=1e-12)
    assert reduced.count == 101


def test_all_reduce_without_a_process_group_is_a_no_op():
    assert not dist.is_initialized()
    acc = CCCAccumulator()
    acc.update(*random_pair(n=10))
    before = acc.sums.clone()
    assert acc.all_reduce_() is acc
    assert torch.equal(acc.sums, before)
