from setuptools import find_packages, setup

setup(
    name="auttention-search",
    version="0.1.0",
    description="Distributed search for the attention / seq2seq recurrent autoencoder configuration "
                "that best predicts continuous paralinguistic labels (e.g. sleepiness) from speech.",
    license="GPL-3.0-or-later",
    python_requires=">=3.10",
    # packages at the root, named so: setuptools then makes the editable install a plain .pth of this folder
    # (without it, a meta path finder and a "be careful with folders ..." notice on every install)
    package_dir={"": "."},
    packages=find_packages(include=["auttention", "auttention.*", "search", "search.*"]),
    package_data={"search": ["report.css"]},  # the search report's style sheet, read at run time
    include_package_data=True,
    # lower bounds: what the code needs; upper bounds: below the next major version of what
    # constraints.txt pins (the exact versions installs use). Ray and Optuna: exactly the range
    # search/compat.py TESTED its private accesses with, so pip cannot install one the search refuses
    install_requires=[
        "tensorflow>=2.16,<3",  # Keras 3
        "keras>=3.3,<4",
        "tensorboard>=2.16,<3",  # TensorFlow no longer pulls it in; trials write TensorBoard scalars
        "ray[default,data,tune]>=2.60.0,<2.61.0",  # = search/compat.py TESTED
        "optuna>=5.0.0,<5.1.0",  # = search/compat.py TESTED
        "librosa>=0.10,<1",
        "soundfile>=0.12,<1",
        "soxr>=0.3,<2",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "pandas>=2.0,<4",
        "scikit-learn>=1.3,<2",
        "threadpoolctl>=3.1,<4",
        "pyarrow>=14,<27",
        "click>=8.1,<9",
        "pyyaml>=6.0,<7",
        "espeakng-loader>=0.2,<1",
        "matplotlib>=3.7,<4",
        "optuna-dashboard>=0.16,<1",  # the README's way to browse a run's optuna.db
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16,<3"],
        # the MLflow tracking client (`run --mlflow URI`); mlflow-skinny because the full
        # `mlflow` 3.0-3.17 caps pyarrow below our pin
        "mlflow": ["mlflow-skinny>=3.4,<4"],
        # flask, sqlalchemy and alembic let mlflow-skinny's `mlflow server` run in tests
        # ruff (lint, format) and mypy: the checks `make test` runs over auttention/ and search/ first
        "test": ["pytest>=7.4,<10", "pytest-timeout>=2.2,<3", "moto[server]>=5,<6",
                 "mlflow-skinny>=3.4,<4", "flask>=3,<4", "sqlalchemy>=2,<3", "alembic>=1.13,<2",
                 "ruff>=0.17,<0.18", "mypy>=2.4,<3", "types-PyYAML>=6,<7"],
    },
    entry_points={"console_scripts": ["auttention-search=search.cli:main"]},
    # no "License ::" classifier: setuptools >= 77 wants the SPDX expression above instead
)
