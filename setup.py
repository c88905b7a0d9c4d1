"""Build script of dgmn_mm: the package plus its C++/OpenMP sampled-attention kernel.

Metadata lives in ``pyproject.toml``; this file only adds the compiled extension
``dgmn_mm.ops._sampled_attention_cpp`` (``dgmn_mm/ops/csrc/sampled_attention.cpp``), which is built against
the torch that is installed, so torch must be importable at build time::

    pip install --no-build-isolation .          # or: pip install --no-build-isolation -e .

Environment variables:

* By default, on x86-64, three builds of the same source are made: ``_sampled_attention_cpp`` with
  portable flags, ``_sampled_attention_cpp_avx2`` (``-march=x86-64-v3``) and ``_sampled_attention_cpp_avx512``
  (``-march=x86-64-v4``); at run time the best one the CPU runs is loaded, by torch's report of the CPU
  capability (``dgmn_mm.ops.backend``).
* ``DGMN_MM_EXT_NATIVE=1``: compile the portable build with ``-march=native`` instead (fastest on the build
  machine, not portable).
* ``DGMN_MM_BUILD_EXT=0``: install without the kernel (the attention then runs its pure-PyTorch backend,
  same results, slower on CPU).
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

EXT_NAME = 'dgmn_mm.ops._sampled_attention_cpp'
# (module suffix, -march) of the x86-64 builds, see dgmn_mm.ops.backend
X86_VARIANTS = (('avx2', 'x86-64-v3'), ('avx512', 'x86-64-v4'))
EXT_SOURCES = ['dgmn_mm/ops/csrc/sampled_attention.cpp']


def ext_setup_kwargs() -> dict:
    """``ext_modules`` and ``cmdclass`` of the kernel (empty with ``DGMN_MM_BUILD_EXT=0``)."""
    if os.environ.get('DGMN_MM_BUILD_EXT', '1') == '0':
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as e:
        raise SystemExit(
            f'dgmn_mm: torch is not importable at build time ({e}). The C++ kernel is compiled against the '
            'installed torch: install torch first, then run pip with --no-build-isolation, e.g. '
            '`pip install --no-build-isolation .` (or set DGMN_MM_BUILD_EXT=0 to install without the kernel).')
    import platform
    cflags = ['-O3', '-g0', '-fopenmp', '-ffp-contract=off', '-std=c++20']
    native = os.environ.get('DGMN_MM_EXT_NATIVE', '0') == '1'
    exts = [CppExtension(EXT_NAME, EXT_SOURCES, extra_compile_args=cflags + (['-march=native'] if native else []),
                         extra_link_args=['-fopenmp'])]
    if not native and platform.machine().lower() in ('x86_64', 'amd64'):
        exts += [CppExtension(f'{EXT_NAME}_{suffix}', EXT_SOURCES, extra_compile_args=cflags + [f'-march={march}'],
                              extra_link_args=['-fopenmp']) for suffix, march in X86_VARIANTS]
    return dict(ext_modules=exts, cmdclass={'build_ext': BuildExtension})


MIM_ITEMS = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):
    """Also copy configs/, tools/ and model-index.yml into the built ``dgmn_mm/.mim`` (the layout that mim
    and mmpretrain's model hub read, as in the mmdet/mmseg/mmpretrain wheels). Editable installs use the
    repository's ``dgmn_mm/.mim`` symlinks instead."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        root = os.path.dirname(os.path.abspath(__file__))
        mim = os.path.join(self.build_lib, 'dgmn_mm', '.mim')
        os.makedirs(mim, exist_ok=True)
        for item in MIM_ITEMS:
            src, dst = os.path.join(root, item), os.path.join(mim, item)
            if not os.path.exists(src):
                continue
            if os.path.islink(dst) or os.path.isfile(dst):
                os.remove(dst)
            elif os.path.isdir(dst):
                shutil.rmtree(dst)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '*.so'))
            else:
                shutil.copy2(src, dst)


setup_kwargs = ext_setup_kwargs()
setup_kwargs.setdefault('cmdclass', {})['build_py'] = BuildPyWithMim
setup(**setup_kwargs)
