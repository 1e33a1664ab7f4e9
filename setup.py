"""Compiles proto/vdcos/v1/*.proto into vdcos/v1/ at build time (never committed)."""
from __future__ import annotations

import glob
import os

from setuptools import setup
from setuptools.command.build_py import build_py


def compile_protos(root: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(glob.glob(os.path.join(root, "proto", "vdcos", "v1", "*.proto")))
    args = ["protoc", f"-I{os.path.join(root, 'proto')}", f"-I{include}",
            f"--python_out={root}", f"--pyi_out={root}", f"--grpc_python_out={root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(protos))


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        compile_protos(os.path.dirname(os.path.abspath(__file__)))
        super().run()


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithProtos})
