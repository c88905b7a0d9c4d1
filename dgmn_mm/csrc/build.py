"""Build the optional C++/OpenMP kernel of the DGMN2 fast attention in place.

    python dgmn_mm/csrc/build.py            # -> dgmn_mm/_sampled_attention_cpp*.so

Run it at install time (``tools/setup_env.sh``), after torch is installed. Without the extension,
``DGMN2Attention(attn_impl='fast')`` falls back to a pure-PyTorch fused path (same results, slower).
Set ``DGMN_MM_EXT_NATIVE=0`` to build without ``-march=native`` (portable binaries).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    cflags = ['-O3', '-fopenmp', '-ffp-contract=off', '-std=c++20']
    if os.environ.get('DGMN_MM_EXT_NATIVE', '1') != '0':
        cflags.append('-march=native')
    ext = CppExtension('dgmn_mm._sampled_attention_cpp', [os.path.join(HERE, 'sampled_attention.cpp')],
                       extra_compile_args=cflags, extra_link_args=['-fopenmp'])
    os.chdir(ROOT)
    setup(name='dgmn_mm_sampled_attention', ext_modules=[ext], cmdclass={'build_ext': BuildExtension},
          script_args=['build_ext', '--inplace', '--build-temp', os.path.join(ROOT, 'build', 'csrc')] +
          sys.argv[1:])


if __name__ == '__main__':
    main()
