"""Environment report: ``python -m dgmn_mm.env``.

Prints the versions of the stack (torch, mmcv, mmengine, mmdet, mmseg, mmpretrain, triton, onnx,
onnxruntime) and the sampled-attention backend each device uses (see :mod:`dgmn_mm.ops.backend`), with the
import error when a backend had to fall back.
"""
import importlib
import platform
import sys
from typing import Dict

PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain', 'triton', 'onnx', 'onnxruntime')


def versions() -> Dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = getattr(importlib.import_module(name), '__version__', '?')
        except Exception as e:  # not installed or broken
            out[name] = f'not available ({type(e).__name__})'
    return out


def collect() -> Dict[str, str]:
    import torch

    from dgmn_mm.ops import backend
    info = {'python': sys.version.split()[0], 'platform': platform.platform()}
    info.update(versions())
    info['cuda available'] = str(torch.cuda.is_available())
    forced = backend.forced_backend() if backend.ENV_VAR else None
    info[backend.ENV_VAR] = forced or '(unset: automatic)'
    for dev, name in backend.describe().items():
        info[f'attention backend ({dev})'] = name
    return info


def main() -> int:
    for key, value in collect().items():
        print(f'{key:<28s} {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
