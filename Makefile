# Two entry points, each doing all the setup on a fresh machine (see README.md).
PYTHON := .venv/bin/python
# the scripts below call `python`: the venv's
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/.venv

.PHONY: install demo test kernel

install:
	bash tools/install.sh

# Train UperNet + Vim-Tiny (reduced depth) on the bundled tiny ADE20K-format sample, then evaluate mIoU.
demo: install
	bash tools/run_demo.sh

# The test suite (CPU).
test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider --durations=15

# Rebuild the fused CPU selective-scan kernel in place after editing mmvssm/ops/csrc/.
kernel:
	$(PYTHON) setup.py build_ext --inplace
