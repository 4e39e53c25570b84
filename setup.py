"""Build of the optional native kernels (``detblocks._native``); the metadata is in pyproject.toml.

The extension is plain C against the Python headers (no PyTorch headers, no C++), built
at install time. When it cannot be built (no C compiler), installation goes on without
it and detblocks computes the same results with PyTorch ops.
"""

import os
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_num_threads() - 1; }\n"


class _BuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            # No fused multiply-add: every rounding must be the PyTorch path's.
            flags = ["-O3", "-ffp-contract=off", "-std=c11"]
            # With OpenMP the kernels run on PyTorch's own thread team; without, on one thread.
            openmp = ["-fopenmp"] if self._links(["-fopenmp"]) else []
            for ext in self.extensions:
                ext.extra_compile_args += flags + openmp
                ext.extra_link_args += openmp
        super().build_extensions()

    def _links(self, flags: list[str]) -> bool:
        """Whether a program using OpenMP compiles and links with ``flags``."""
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as fh:
                fh.write(_OPENMP_PROBE)
            try:
                objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
            except Exception:  # any compiler or linker failure: build without
                return False
        return True


setup(
    ext_modules=[
        Extension("detblocks._native", ["src/detblocks/_native.c"], optional=True),
        Extension("detblocks._native_lsa", ["src/detblocks/_native_lsa.c"], optional=True),
        Extension("detblocks._native_ioufam", ["src/detblocks/_native_ioufam.c"], optional=True),
        Extension("detblocks._native_dynk", ["src/detblocks/_native_dynk.c"], optional=True),
        # -fno-math-errno: sqrtf stays the IEEE square root but vectorises (no errno to set).
        Extension(
            "detblocks._native_atss",
            ["src/detblocks/_native_atss.c"],
            extra_compile_args=["-fno-math-errno"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": _BuildExt},
)
