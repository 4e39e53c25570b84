"""Build of the optional native kernels (``detblocks._native``); the metadata is in pyproject.toml.

The extension is plain C against the Python headers (no PyTorch headers, no C++), built
at install time. When it cannot be built (no C compiler), installation goes on without
it and detblocks computes the same results with PyTorch ops.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class _BuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                # No fused multiply-add: every rounding must be the PyTorch path's.
                ext.extra_compile_args += ["-O3", "-ffp-contract=off", "-std=c11"]
        try:  # with OpenMP first: the kernels then run on PyTorch's own thread team
            self._with_flags(["-fopenmp"], ["-fopenmp"])
            super().build_extensions()
        except Exception:  # no OpenMP: single-threaded kernels
            self._with_flags([], [])
            super().build_extensions()

    def _with_flags(self, compile_args: list[str], link_args: list[str]) -> None:
        for ext in self.extensions:
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-fopenmp"] + compile_args
            ext.extra_link_args = [a for a in ext.extra_link_args if a != "-fopenmp"] + link_args


setup(
    ext_modules=[Extension("detblocks._native", ["src/detblocks/_native.c"], optional=True)],
    cmdclass={"build_ext": _BuildExt},
)
