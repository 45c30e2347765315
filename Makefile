# Everything a user runs. Variables: POLICY, SIM, ARGS (key=value config overrides), CONFIG, CKPT.
POLICY ?= openvla_oft
SIM ?= libero
ARGS ?=
CONFIG ?=
CKPT ?=
PY := .venv/bin/python
VLA := $(PY) -m vla.cli
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)
export MUJOCO_GL ?= egl
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install finetune train demos eval rl rl-noise rl-demo rl-demo-residual rl-demo-tokens rl-demo-rft rl-demo-pushcube config test test-unit bench clean

install:
	bash scripts/install.sh

finetune:
	$(VLA) finetune --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) $(ARGS)

train:
	$(VLA) train --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) $(ARGS)

demos:
	$(VLA) demos --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) $(ARGS)

config:
	$(VLA) config --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) $(ARGS)

SUITE ?=
WORKERS ?= 2
RAY ?=
eval:
	@test -n "$(CKPT)" || (echo "usage: make eval CKPT=<checkpoint dir> [SUITE=libero_130|libero_spatial,...|maniskill] [RAY=auto|<head ip>:6379]"; exit 2)
	@test -z "$(RAY)" -o -n "$(SUITE)" || (echo "RAY= shards a sweep: give SUITE= too"; exit 2)
	$(if $(SUITE),$(VLA) sweep --ckpt $(CKPT) --suite $(SUITE) --workers $(WORKERS) $(if $(RAY),--ray $(RAY),) $(ARGS),$(VLA) eval --ckpt $(CKPT) $(ARGS))

ALGO ?= ppo
rl:
	@test -n "$(CKPT)" || (echo "usage: make rl POLICY=<recipe> SIM=libero ALGO=ppo|grpo|rft|td3 CKPT=<bc checkpoint> [ARGS='rl.iterations=20 ...']"; exit 2)
	$(VLA) rl --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) --ckpt $(CKPT) rl.algo=$(ALGO) $(ARGS)

# How many episodes an RL update needs at a checkpoint (the gradient noise scale of its policy gradient),
# from one GRPO plan of rl.episodes_per_iter episodes; README "Online RL", "How many episodes an update needs".
rl-noise:
	@test -n "$(CKPT)" || (echo "usage: make rl-noise POLICY=<recipe> SIM=libero CKPT=<checkpoint> [ARGS='rl.episodes_per_iter=128 ...']"; exit 2)
	$(VLA) rl-noise --policy $(POLICY) --sim $(SIM) $(CONFIG_FLAG) --ckpt $(CKPT) $(ARGS)

# The RL learning demonstration in the README: a deliberately under-trained diffusion policy (the
# 1,000-step checkpoint of `make finetune`'s 1,500-step BC run), then GRPO on init states 0-9 of its
# task (a fresh scene seed per group), evaluated before and after on the same 100 episodes (init
# states 0-9 x seeds 7-16; the seed sets the scene's fixture placement and the sampling noise). Every
# evaluation acts with the stochastic DDIM chain that RL optimizes (head.sampler=stochastic), the BC
# policy's included.
RL_DEMO_ARGS ?= rl.algo=grpo rl.iterations=30 rl.episodes_per_iter=16 rl.group_size=4 rl.lr=5e-6 \
	rl.epochs=2 rl.target_kl=0.1 "rl.init_states=[0,1,2,3,4,5,6,7,8,9]" rl.eval_episodes_per_task=10 \
	"rl.eval_seeds=[7,8,9,10,11,12,13,14,15,16]" head.sampler=stochastic
rl-demo:
	$(VLA) train --policy diffusion --sim $(SIM) output_dir=runs/diffusion
	$(VLA) rl --policy diffusion --sim $(SIM) --ckpt runs/diffusion/checkpoints/step_0001000 output_dir=runs/rl_demo_diffusion_grpo $(RL_DEMO_ARGS)

# The smaller residual-PPO demonstration (ResiP): the same 1,000-step diffusion checkpoint frozen as
# the base (its deterministic eta=0 DDIM chunk) under a zero-initialised Gaussian residual; PPO trains
# only the residual and its critic. Evaluated with the residual's mean (so iteration 0 is the base
# alone) on 50 fixed episodes (init states 0-9 x seeds 7-11).
RL_DEMO_RESIDUAL_ARGS ?= rl.algo=ppo rl.iterations=10 rl.episodes_per_iter=16 rl.lr=1e-4 rl.critic_warmup=1 \
	rl.epochs=4 rl.target_kl=0.5 "rl.init_states=[0,1,2,3,4,5,6,7,8,9]" rl.eval_episodes_per_task=10 \
	"rl.eval_seeds=[7,8,9,10,11]"
rl-demo-residual:
	test -d runs/diffusion/checkpoints/step_0001000 || $(VLA) train --policy diffusion --sim $(SIM) output_dir=runs/diffusion
	$(VLA) rl --policy residual --sim $(SIM) --ckpt runs/diffusion/checkpoints/step_0001000 output_dir=runs/rl_demo_residual_ppo $(RL_DEMO_RESIDUAL_ARGS)

# The token-PPO demonstration: OpenVLA-OFT with bin-token outputs (head.oft_output=tokens: 56
# categorical tokens per chunk, decoded in parallel) behaviour-cloned for 1,500 steps, then 10 PPO
# iterations of 16 episodes on the tokens' log-probs with a critic on the backbone features, the dense
# progress reward, and a sampling temperature per action dimension that RL learns
# (head.learn_temperature; the BC policy's sampled bins succeed half as often as its argmax). Each
# gradient step takes the whole iteration's batch (rl.minibatch_size above the ~400 decisions of 16
# episodes). Evaluated before and after with sampled bins (the policy RL trains) on the same 100
# episodes (init states 0-9 x seeds 7-16; the seed fixes the scene's fixture placement).
RL_DEMO_TOKENS_ARGS ?= rl.algo=ppo rl.reward=dense rl.iterations=10 rl.episodes_per_iter=16 rl.lr=1e-5 \
	rl.minibatch_size=512 rl.critic_warmup=1 rl.epochs=4 rl.target_kl=0.5 head.learn_temperature=true \
	rl.temperature_lr=0.02 "rl.init_states=[0,1,2,3,4,5,6,7,8,9]" rl.eval_episodes_per_task=10 \
	"rl.eval_seeds=[7,8,9,10,11,12,13,14,15,16]" head.sampler=stochastic
rl-demo-tokens:
	test -d runs/oft_tokens/checkpoints/step_0001500 || $(VLA) train --policy openvla_oft --sim $(SIM) head.oft_output=tokens output_dir=runs/oft_tokens
	$(VLA) rl --policy openvla_oft --sim $(SIM) --ckpt runs/oft_tokens/checkpoints/step_0001500 output_dir=runs/rl_demo_oft_tokens_temp $(RL_DEMO_TOKENS_ARGS)

# Success-filtered self-imitation (rl.algo=rft) on the same token BC checkpoint: each iteration rolls
# out 16 episodes with sampled bins at temperature 1, keeps the successful ones and takes 4 epochs of
# 32-decision maximum-likelihood steps on their chunks (no critic, no ratio, no trust region).
# Evaluated like rl-demo-tokens, on the same 100 episodes with sampled bins.
RL_DEMO_RFT_ARGS ?= rl.algo=rft rl.iterations=12 rl.episodes_per_iter=16 rl.lr=3e-5 rl.minibatch_size=32 \
	rl.epochs=4 rl.target_kl=null "rl.init_states=[0,1,2,3,4,5,6,7,8,9]" rl.eval_episodes_per_task=10 \
	"rl.eval_seeds=[7,8,9,10,11,12,13,14,15,16]" head.sampler=stochastic
rl-demo-rft:
	test -d runs/oft_tokens/checkpoints/step_0001500 || $(VLA) train --policy openvla_oft --sim $(SIM) head.oft_output=tokens output_dir=runs/oft_tokens
	$(VLA) rl --policy openvla_oft --sim $(SIM) --ckpt runs/oft_tokens/checkpoints/step_0001500 output_dir=runs/rl_demo_rft $(RL_DEMO_RFT_ARGS)

# RL on the second simulator: ManiSkill's PushCube (episodes of at most 80 steps, 5x shorter than LIBERO's,
# so a CPU iteration plays 32 of them). 50 PushCube demos from its scripted solution, a pi0 (flow) BC, then PPO
# on the Flow-SDE log-probs with ManiSkill's dense reward, rollouts on fresh placements, evaluated before and
# after on the same 100 held-out placements (init states 0-49 x seeds 7 and 8) with the sampler RL trains.
# The BC is 1,500 steps, then a copy resumed to 4,000 (its cosine schedule restarts at 1,500): at 1,500 steps the
# policy does not yet follow the cube's y (`vla fit`) and RL on it did not learn (README, Online RL).
RL_DEMO_PUSH_ARGS ?= rl.algo=ppo rl.reward=dense rl.iterations=10 rl.episodes_per_iter=32 rl.lr=1e-5 \
	rl.minibatch_size=64 rl.critic_warmup=2 rl.epochs=4 rl.target_kl=1.0 rl.eval_episodes_per_task=50 \
	"rl.eval_seeds=[7,8]" head.sampler=stochastic
PUSH_BC := $(VLA) train --policy pi0 --sim maniskill "demos.tasks=[2]" demos.episodes_per_task=50
rl-demo-pushcube:
	test -d runs/push_pi0/checkpoints/step_0001500 || $(PUSH_BC) output_dir=runs/push_pi0
	test -d runs/push_pi0_long || cp -r runs/push_pi0 runs/push_pi0_long
	test -d runs/push_pi0_long/checkpoints/step_0004000 || $(PUSH_BC) output_dir=runs/push_pi0_long train.steps=4000
	$(VLA) rl --policy pi0 --sim maniskill --ckpt runs/push_pi0_long/checkpoints/step_0004000 output_dir=runs/rl_demo_pushcube $(RL_DEMO_PUSH_ARGS)

# Real robot: the policy server and the deployment daemon, each its own process (see README "Real robot").
.PHONY: serve deploy
PORT ?= 8000
serve:
	@test -n "$(CKPT)" || (echo "usage: make serve CKPT=<checkpoint dir> [PORT=8000]"; exit 2)
	$(VLA) serve --ckpt $(CKPT) --port $(PORT) $(ARGS)

ROBOT ?= sim
TASK ?=
RECORD ?=
deploy:
	@test -n "$(TASK)" || (echo 'usage: make deploy TASK="<instruction>" [ROBOT=sim|franka] [RECORD=<new dataset dir>] [ARGS="--robot-ip 172.16.0.2 --camera agentview=realsense ..."]'; exit 2)
	$(VLA) deploy --robot $(ROBOT) --port $(PORT) --task "$(TASK)" $(if $(RECORD),--record $(RECORD),) $(ARGS)

test:
	$(PY) -m pytest -q

test-unit:
	$(PY) -m pytest -q -m "not integration"

bench:
	$(VLA) bench --out bench_results $(ARGS)

clean:
	rm -rf runs bench_results .pytest_cache
