# The two commands for a fresh machine:
#   make demo   set everything up, then run the device loop on the bundled sample media with the bundled model
#   make test   set everything up, then run the test suite
.PHONY: setup demo test bench clean

setup:
	scripts/setup.sh

# The device loop needs no TensorFlow: only the device dependencies are installed for it.
demo:
	EXTRAS=mqtt scripts/setup.sh
	.venv/bin/edgesense run --config firmware_configs/desktop.yaml \
		--video samples/scene.mp4 --audio samples/speech_commands.wav --fast --events -

test: setup
	.venv/bin/python -m pytest -q

# Device-loop speed on the bundled media (real-time factor, per-stage p50/p95, command latency).
bench:
	EXTRAS=mqtt scripts/setup.sh
	.venv/bin/python scripts/bench_loop.py --model models/edgesense.tflite

clean:
	rm -rf .venv build *.egg-info .pytest_cache
