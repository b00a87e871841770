# The two commands of the README:
#   make run    set up the runtime and caption the bundled sample video with the bundled model
#   make test   set up, lint, type-check and run the whole test suite
# `make demo` generates a small ShapesWorld, trains briefly, evaluates and exports a bundle.
# `make shapes` is the full run behind the shipped model (its timings, per machine: docs/results.md);
# `make bundle` exports its checkpoint to models/shapes and evaluates that through the ONNX core.
# `make recover` rebuilds that checkpoint from the shipped bundle, where runs/shapes/best.pt is gone
# (training runs are not committed), so the same weights can be exported again:
#   make recover && make bundle CHECKPOINT=runs/shapes/recovered.pt EVALUATION=

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/shapes
DEMO ?= data/demo

.PHONY: setup run demo shapes bundle recover bench bench-quick gpu-check gpu-kit gpu-rehearsal soak test lint clean

setup: $(VENV)/.installed

# The runtime alone (av, numpy, onnxruntime) is enough for `make run`; the rest adds PyTorch.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[train,dev,bench,archive,ray,web,mqtt,service]'
	touch $@

# Live captions of the bundled sample (pass your own sources: make run ARGS="rtsp://... webcam").
run: $(VENV)/.runtime
	$(PY) run_stream.py $(ARGS)

demo: setup
	$(PY) -m lrcn.world --out $(DEMO)/train --videos 120 --seed 11 --workers 2
	$(PY) -m lrcn.world --out $(DEMO)/val --videos 20 --seed 12
	$(PY) -m lrcn.world --out $(DEMO)/test --videos 30 --seed 13
	$(PY) -m lrcn.train --config configs/shapes.json --train $(DEMO)/train --val $(DEMO)/val \
		--out runs/demo --minutes 4
	$(PY) -m lrcn.evaluate --checkpoint runs/demo/best.pt --data $(DEMO)/test \
		--out runs/demo/eval.json
	$(PY) -m export --checkpoint runs/demo/best.pt --out runs/demo/bundle \
		--evaluation runs/demo/eval.json
	$(PY) -m export.validate runs/demo/bundle --speed 1 8

# Training data varies the look of every video (--vary) and adds still images (one-frame samples
# captioned with their appearance); the test, novel and still splits are scored, and the test
# split again rendered at 25 and 60 fps and antialiased (same seed: the same events).
# The independent splits are drawn by a second renderer (lrcn/independent_world.py: its own
# colours, shapes, backgrounds, noise, sizes and encoding; the test split's holdout): they are
# only ever evaluated, never used for training or model selection.
shapes: setup
	$(PY) -m lrcn.world --out $(DATA)/train --videos 600 --seed 1 --holdout default --vary \
		--workers 2
	$(PY) -m lrcn.world --out $(DATA)/train-stills --videos 2000 --seed 7 --holdout default \
		--vary --stills --workers 2
	$(PY) -m lrcn.world --out $(DATA)/val --videos 60 --seed 2 --holdout default --vary
	$(PY) -m lrcn.world --out $(DATA)/test --videos 150 --seed 3 --holdout default
	$(PY) -m lrcn.world --out $(DATA)/novel --videos 60 --seed 4 --holdout default --only-holdout
	$(PY) -m lrcn.world --out $(DATA)/stills --videos 300 --seed 6 --holdout default --vary \
		--stills
	$(PY) -m lrcn.world --out $(DATA)/test-25fps --videos 150 --seed 3 --holdout default \
		--fps 25 --workers 2
	$(PY) -m lrcn.world --out $(DATA)/test-60fps --videos 150 --seed 3 --holdout default \
		--fps 60 --workers 2
	$(PY) -m lrcn.world --out $(DATA)/test-antialiased --videos 150 --seed 3 --holdout default \
		--antialias --workers 2
	$(PY) -m lrcn.independent_world --out $(DATA)/independent --videos 60 --seed 31 \
		--holdout default --workers 2
	$(PY) -m lrcn.independent_world --out $(DATA)/independent-stills --videos 300 --seed 32 \
		--holdout default --stills --workers 2
	$(PY) -m lrcn.train --config configs/shapes.json --train $(DATA)/train $(DATA)/train-stills \
		--val $(DATA)/val --out runs/shapes
	$(PY) -m lrcn.evaluate --checkpoint runs/shapes/best.pt $(EVAL_SPLITS) \
		--out runs/shapes/eval.json

EVAL_SPLITS = --data $(DATA)/test --novel $(DATA)/novel --stills $(DATA)/stills \
	--variant 25fps=$(DATA)/test-25fps --variant 60fps=$(DATA)/test-60fps \
	--variant antialiased=$(DATA)/test-antialiased --variant independent=$(DATA)/independent \
	--stills-variant independent-stills=$(DATA)/independent-stills

# The shipped bundle: weights stored in float16 to stay small (see README), evaluated through the
# torch-free ONNX core with the results recorded in its bundle.json (greedy decoding: beam search
# of width 3 scored within 0.001 of it on every split so far; `--beam 3` adds it).
# CHECKPOINT and EVALUATION (the checkpoint's eval.json; empty: none) choose what is exported.
# The bundle also gets an int8 encoder for CPUs with VNNI or AMX, calibrated on the validation
# split (never the test split), with its captions' agreement with fp32 on the test split
# recorded (precision auto uses it only at 99% or more); the evaluations are fp32's.
CHECKPOINT ?= runs/shapes/best.pt
EVALUATION ?= runs/shapes/eval.json

bundle: setup
	$(PY) -m export --checkpoint $(CHECKPOINT) --out models/shapes --weights float16 \
		$(if $(EVALUATION),--evaluation $(EVALUATION)) \
		--int8-calibration $(DATA)/val --int8-agreement $(DATA)/test
	$(PY) -m lrcn.evaluate --bundle models/shapes $(EVAL_SPLITS) \
		--device cpu --precision fp32 --record --beam --out runs/shapes/eval-bundle.json
	$(PY) -m lrcn.evaluate --bundle models/shapes --data $(DATA)/test --novel $(DATA)/novel \
		--device cpu --precision fp32 --record --encode-every-frame --beam --no-meteor \
		--out runs/shapes/eval-bundle-every-frame.json

# The checkpoint behind models/shapes, rebuilt from its graphs (the trainable weights as the bundle
# stores them; the frozen backbone comes from its installed file) and verified by exporting it
# again: every graph must match the shipped one (see export/recover.py).
recover: setup
	$(PY) -m export.recover --bundle models/shapes --out runs/shapes/recovered.pt

# Benchmarks of the runtime with the shipped bundle (about 25 minutes on 2 cores; bench-quick a few).
bench: setup
	$(PY) -m bench

bench-quick: setup
	$(PY) -m bench --quick

# On a machine with an NVIDIA GPU: CUDA against CPU captions, the fp16 bundle, NVDEC's input,
# and the benchmark on the GPU, into runs/gpu-check/ (see the README's "GPU" section).
gpu-check: setup
	$(VENV)/bin/pip install --quiet -e '.[gpu]'
	PYTHON=$(PY) bench/gpu_check.sh

# The offline GPU kit for a lent machine without network: wheels in parts of 30 MB and the plan of
# calls (runs/gpu-kit/PLAN.md; see docs/gpu-kit.md). The rehearsal runs the same driver here, with
# wheels for this Python: every GPU step fails in one line and the run goes on.
gpu-kit:
	$(PYTHON) -m bench.gpu_kit

gpu-rehearsal: setup
	$(PY) -m bench.gpu_kit --out runs/gpu-rehearsal/kit --python-version \
		$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	rm -f runs/gpu-rehearsal/results/results.json
	$(PY) -m bench.gpu_drive --kit runs/gpu-rehearsal/kit run --seconds 900 \
		--results runs/gpu-rehearsal/results \
		|| test -s runs/gpu-rehearsal/results/results.json  # GPU steps fail here, by design

# Ten minutes of two paced live cameras: RSS, descriptors, threads, queues and latency stay flat.
soak: setup
	$(PY) -m bench.soak --seconds 600 --streams 2

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

clean:
	rm -rf runs/demo $(DEMO) cache/features
