"""Package discovery (the metadata is in pyproject.toml).

The distribution installs one top-level import name, ``unified``: every package under ``unified/`` and
the repository's ``adapters/`` folder, shipped as ``unified.adapters`` (``package_dir`` maps the folder
to that name). Both lists are discovered, never written by hand.
"""

from setuptools import find_packages, setup

ADAPTERS_DIR = "adapters"
ADAPTERS_PKG = "unified.adapters"

packages = find_packages(include=["unified", "unified.*"])
packages += [ADAPTERS_PKG] + [f"{ADAPTERS_PKG}.{p}" for p in find_packages(where=ADAPTERS_DIR)]

setup(packages=packages, package_dir={ADAPTERS_PKG: ADAPTERS_DIR})
