"""Compile sandbox/contracts/Escrow.sol with npm solc (solcjs) --standard-json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from . import REPO

SOURCE = REPO / "sandbox" / "contracts" / "Escrow.sol"
ARTIFACT = REPO / "sandbox" / "contracts" / "Escrow.json"
SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"


def find_solcjs() -> str | None:
    local = REPO / ".tools" / "node_modules" / ".bin" / "solcjs"
    if local.exists():
        return str(local)
    return shutil.which("solcjs")


def standard_input(source: str) -> dict:
    return {
        "language": "Solidity",
        "sources": {"Escrow.sol": {"content": source}},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": 200},
            "metadata": {"bytecodeHash": "none"},
            "outputSelection": {"Escrow.sol": {"Escrow": ["abi", "evm.bytecode.object"]}},
        },
    }


def compile_escrow(source_path: Path = SOURCE) -> dict:
    """Return {"contractName", "abi", "bytecode" (0x...), "compiler", "evmVersion"}."""
    solcjs = find_solcjs()
    if solcjs is None:
        raise FileNotFoundError("solcjs not found (run `make tools`: npm ci --prefix .tools)")
    payload = json.dumps(standard_input(Path(source_path).read_text()))
    proc = subprocess.run([solcjs, "--standard-json"], input=payload, capture_output=True,
                          text=True, timeout=180, env={**os.environ})
    out = proc.stdout
    start = out.find("{")
    if start < 0:
        raise RuntimeError(f"solcjs produced no JSON (rc={proc.returncode}): "
                           f"{proc.stderr.strip()[:500]} {out[:500]}")
    result = json.loads(out[start:])
    errors = [e for e in result.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc: " + "; ".join(e.get("formattedMessage", e.get("message", ""))
                                                for e in errors))
    contract = result["contracts"]["Escrow.sol"]["Escrow"]
    return {
        "contractName": "Escrow",
        "compiler": f"solc-js {SOLC_VERSION}",
        "evmVersion": EVM_VERSION,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
    }


def load_artifact(path: Path = ARTIFACT) -> dict:
    return json.loads(Path(path).read_text())


def write_artifact(path: Path = ARTIFACT) -> dict:
    artifact = compile_escrow()
    Path(path).write_text(json.dumps(artifact, indent=2) + "\n")
    return artifact


if __name__ == "__main__":  # `make artifact`
    art = write_artifact()
    print(f"wrote {ARTIFACT.relative_to(REPO)}: {len(art['abi'])} abi entries, "
          f"{(len(art['bytecode']) - 2) // 2} bytes of bytecode")
