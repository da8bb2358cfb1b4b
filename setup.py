from setuptools import find_packages, setup

setup(
    name="auttention-search",
    version="0.1.0",
    description="Distributed search for the attention / seq2seq recurrent autoencoder configuration "
                "that best predicts continuous paralinguistic labels (e.g. sleepiness) from speech.",
    license="GPL-3.0-or-later",
    python_requires=">=3.10",
    packages=find_packages(include=["auttention", "auttention.*", "search", "search.*"]),
    package_data={"search": ["report.css"]},  # the search report's style sheet, read at run time
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",  # Keras 3
        "keras>=3.3",
        "tensorboard>=2.16",  # TensorFlow no longer pulls it in; trials write TensorBoard scalars
        "ray[default,data,tune]>=2.40",
        "optuna>=4.0",
        "librosa>=0.10",
        "soundfile>=0.12",
        "soxr>=0.3",
        "numpy>=1.26",
        "scipy>=1.11",
        "pandas>=2.0",
        "scikit-learn>=1.3",
        "threadpoolctl>=3.1",
        "pyarrow>=14",
        "click>=8.1",
        "pyyaml>=6.0",
        "espeakng-loader>=0.2",
        "matplotlib>=3.7",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "test": ["pytest>=7.4", "pytest-timeout>=2.2"],
    },
    entry_points={"console_scripts": ["auttention-search=search.cli:main"]},
    classifiers=["License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)"],
)
