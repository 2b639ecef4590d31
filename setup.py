"""Package discovery only; everything else is in pyproject.toml.

The source folders baseline/ and server/ install as c2seg_baseline and c2seg_server.
pyproject.toml's packages.find cannot rename a folder, so the packages are found here: every
package below the three roots, under its installed name. Folders of data files (templates,
static) count as packages too, so that their files install with them (package-data in
pyproject.toml says which).
"""

from setuptools import find_namespace_packages, setup

# installed name -> source folder
ROOTS = {"c2seg_kit": "c2seg_kit", "c2seg_baseline": "baseline", "c2seg_server": "server"}


def installed_packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        for package in find_namespace_packages(include=[folder, f"{folder}.*"], exclude=["*__pycache__*"]):
            found.append(name + package[len(folder):])
    return sorted(found)


setup(packages=installed_packages(), package_dir={n: f for n, f in ROOTS.items() if n != f})
