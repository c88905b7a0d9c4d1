import sys, types, torch.nn as nn, torch
def install():
    if 'timm' not in sys.modules:
        try:
            import timm  # noqa
        except ImportError:
            timm = types.ModuleType('timm'); models = types.ModuleType('timm.models')
            layers = types.ModuleType('timm.models.layers'); reg = types.ModuleType('timm.models.registry')
            vt = types.ModuleType('timm.models.vision_transformer')
            class DropPath(nn.Module):
                def __init__(self, p=0.): super().__init__(); self.drop_prob = p
                def forward(self, x): return x
            layers.DropPath = DropPath; layers.trunc_normal_ = nn.init.trunc_normal_
            layers.to_2tuple = lambda x: (x, x)
            reg.register_model = lambda f: f; vt._cfg = lambda **k: k
            for n, m in [('timm', timm), ('timm.models', models), ('timm.models.layers', layers),
                         ('timm.models.registry', reg), ('timm.models.vision_transformer', vt)]:
                sys.modules[n] = m
    dcn = types.ModuleType('dcn')
    class DeformUnfold(nn.Module):  # parameter-free in the official code (dcn/modules/deform_unfold.py)
        def __init__(self, kernel_size, stride=1, padding=0, dilation=1, deformable_groups=1, bias=False):
            super().__init__()
    dcn.DeformUnfold = DeformUnfold
    sys.modules['dcn'] = dcn
    return DeformUnfold
