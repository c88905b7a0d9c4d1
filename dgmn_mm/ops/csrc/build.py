"""Build the C++/OpenMP sampled-attention kernel in place (developer shortcut).

    python dgmn_mm/ops/csrc/build.py        # -> dgmn_mm/ops/_sampled_attention_cpp*.so

Equivalent to ``python setup.py build_ext --inplace`` at the repository root; ``pip install
--no-build-isolation [-e] .`` builds the same extension as part of the package. ``DGMN_MM_EXT_NATIVE=1``
adds ``-march=native``.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None) -> int:
    cmd = [sys.executable, 'setup.py', 'build_ext', '--inplace',
           '--build-temp', os.path.join('build', 'csrc')] + list(sys.argv[1:] if argv is None else argv)
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == '__main__':
    sys.exit(main())
