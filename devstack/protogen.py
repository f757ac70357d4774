"""Generate the Python stubs in gen/ from the contracts in proto/.

The stubs are committed so services import them without a build step; the test suite
regenerates them into a temporary folder and fails when gen/ differs (stale stubs).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
BIN = Path(sys.executable).parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and *.pyi for every contract into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        # The mypy plugins are console scripts next to this interpreter, maybe not on PATH.
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    # Packages need an __init__.py so that mypy and setuptools see them.
    for folder in [out_dir / p.parent for p in map(Path, files)]:
        while folder != out_dir:
            (folder / "__init__.py").touch()
            folder = folder.parent


def generated_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


if __name__ == "__main__":
    generate(REPO / (sys.argv[1] if len(sys.argv) > 1 else "gen"))
