"""Each head's RL path: one policy-gradient step on a fixed batch raises the log-prob of the
action that got a positive advantage (and lowers the one with a negative advantage)."""
import pytest
import torch

from head_problems import Problem

CASES = {
    "tokenized": ("tokenized", {"chunk": 1}),
    "oft_tokens": ("oft", {"oft_output": "tokens"}),
    "flow_sde": ("flow", {"flow": {"steps": 4}}),
    "flow_noise": ("flow", {"flow": {"steps": 4, "rl_noise": "noise"}}),
    "flow_sde_one_step": ("flow", {"flow": {"steps": 4, "rl_steps": "one"}}),
    "diffusion_dppo": ("diffusion", {"diffusion": {"inference_steps": 4}}),
    "residual": ("residual", {}),
}
# the head's own parameters RL must reach through the log-prob (not only the backbone): the learned noise of
# Flow-Noise, the residual's mean as well as its std, the expert that sets each denoising step's mean
MUST_LEARN = {"tokenized": ["start"], "oft_tokens": ["slots"], "flow_sde": ["expert."],
              "flow_noise": ["expert.", "noise_std."], "flow_sde_one_step": ["expert."],
              "diffusion_dppo": ["expert."], "residual": ["mean_net.", "log_std"]}


@pytest.mark.parametrize("case", list(CASES))
def test_one_update_moves_log_prob_toward_the_advantaged_action(case):
    head_type, kwargs = CASES[case]
    p = Problem(head_type, **kwargs)
    if case == "residual":
        p.head.freeze_base()
        p.bb.requires_grad_(False)
    p.bb.eval()
    sample = p.head.sample_rl(p.prefix(), torch.Generator().manual_seed(0)).detach()
    advantage = torch.tensor([1.0, -1.0, 0.0, 0.0])
    before, _ = p.head.evaluate(p.prefix(), sample.record)
    assert torch.allclose(before, sample.log_prob, rtol=1e-3, atol=1e-3)  # on-policy: ratio 1
    params = p.params()
    grads = torch.autograd.grad(-(advantage * before).mean(), params, allow_unused=True)
    norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
    assert norm > 0
    by_param = {id(q): g for q, g in zip(params, grads)}
    for prefix in MUST_LEARN[case]:
        reached = [n for n, q in p.head.named_parameters()
                   if n.startswith(prefix) and by_param.get(id(q)) is not None and by_param[id(q)].abs().sum() > 0]
        assert reached, f"no gradient reaches head.{prefix}*"
    with torch.no_grad():  # a small normalized gradient step: the first-order effect dominates
        for q, g in zip(params, grads):
            if g is not None:
                q -= 1e-3 * g / norm
    with torch.no_grad():
        after, _ = p.head.evaluate(p.prefix(), sample.record)
    assert after[0] > before[0].detach() and after[1] < before[1].detach()
