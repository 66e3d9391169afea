"""Build hook for the one C extension; everything else is in pyproject.toml.

``emulator._speedups`` (CRC-32 and the base64 check of the audio-event path) is
optional: without a C compiler the build goes on without it, and
``emulator.speedups`` uses the pure-Python code instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "emulator._speedups",
            sources=["emulator/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
