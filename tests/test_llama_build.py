"""The llama.cpp that `make install` builds runs on this machine's CPU.

Why: on a Sapphire Rapids CPU a `-march=native` build turns on ggml's AMX matrix multiply, which
segfaults at the first prompt longer than a few tokens (ggml-org/llama.cpp#20824): every node worker and
provider died at its first call, and the suite hung on jobs whose providers were gone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DECODE = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=512, n_threads=2, n_threads_batch=2, verbose=False)
out = llm.create_completion("The numbers from one to forty: " + "one two three four " * 10, max_tokens=4)
print(out["usage"]["prompt_tokens"])
"""


def test_llama_cpp_is_built_without_amx() -> None:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info, f"llama.cpp was built with AMX (rebuild with `make install`): {info}"


def test_a_prompt_of_dozens_of_tokens_decodes_in_a_fresh_process(smollm2_gguf: Path) -> None:
    """In a child process, so a crash in the native code fails this test instead of killing pytest."""
    result = subprocess.run(
        [sys.executable, "-c", DECODE, str(smollm2_gguf)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"llama.cpp died with {result.returncode}: {result.stderr[-2000:]}"
    assert int(result.stdout.split()[-1]) > 40
