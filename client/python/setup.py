"""Generates the gRPC stubs from the repository's proto/ at build time (protoc and
grpc_python_plugin: Debian's protobuf-compiler and protobuf-compiler-grpc)."""
import os
import shutil
import subprocess

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = ["loracle/v1/inference.proto", "loracle/v1/adapters.proto", "loracle/v1/training.proto"]


def generate(out_dir):
    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if not plugin or not protoc:
        raise RuntimeError("protoc and grpc_python_plugin are needed to build loracle-client "
                           "(Debian: protobuf-compiler protobuf-compiler-grpc)")
    os.makedirs(os.path.join(out_dir, "loracle", "v1"), exist_ok=True)
    subprocess.check_call([protoc, f"-I{PROTO_ROOT}", f"--python_out={out_dir}",
                           f"--grpc_out={out_dir}", f"--plugin=protoc-gen-grpc={plugin}"] + PROTOS)
    for package in ("loracle", os.path.join("loracle", "v1")):
        open(os.path.join(out_dir, package, "__init__.py"), "a").close()


# Into the source tree, before setuptools looks for the packages it lists (loracle, loracle.v1).
generate(HERE)
setup()
