"""tools/demo/image_demo.py and tools/analysis_tools/visualize_sampled_nodes.py on a real photo."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_tool(rel):
    spec = importlib.util.spec_from_file_location(Path(rel).stem + '_under_test', ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def photo():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


@pytest.fixture(scope='module')
def vis():
    return load_tool('tools/analysis_tools/visualize_sampled_nodes.py')


def nontrivial_dgmn2():
    """DGMN2-Tiny with walks of a few pixels (random init gives ~0.1 px) and non-zero biases."""
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    torch.manual_seed(0)
    model = DGMN2(arch='tiny').eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, 'walk') and isinstance(getattr(m, 'walk'), torch.nn.Linear):
                m.walk.weight.mul_(8)
                m.walk.bias.uniform_(-0.8, 0.8)
    return model


def test_drawn_nodes_are_the_samplers(vis, monkeypatch, tmp_path):
    """The recorded walks are predict_walk's; the node positions are where sample_nodes reads; the drawn
    points are those positions mapped to the photo."""
    import dgmn_mm  # noqa: F401
    from dgmn_mm.models.layers.node_sampling import sample_nodes
    model = nontrivial_dgmn2()
    assert {b.attn.attn_impl for s in model.stages for b in s.blocks} == {'fast'}
    x = torch.randn(1, 3, 96, 128)
    scale = 0.5  # pretend the photo was twice as large
    points = [(100.0, 60.0), (3.0, 180.0)]
    stages = vis.sampled_nodes(model, x, points, scale)
    assert {b.attn.attn_impl for s in model.stages for b in s.blocks} == {'fast'}  # restored
    assert [s['hw_shape'] for s in stages] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    checked = fractional = 0
    for st, stage in zip(stages, model.stages):
        attn = stage.blocks[st['block']].attn
        H, W = st['hw_shape']
        # (a) the hook's walk is exactly DGMN2Attention.predict_walk on the same tokens
        with vis.WalkRecorder(model) as rec, torch.no_grad():
            model(x)
        r = rec.records[(st['stage'], st['block'])]
        assert torch.equal(r['walk'], attn.predict_walk(r['tokens'], (H, W)))
        assert torch.equal(st['walk'], r['walk'])
        # (b) positions = where sample_nodes interpolates: sample a map holding its own coordinates
        yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing='ij')
        coord_map = torch.stack([yy, xx]).unsqueeze(0).expand(r['walk'].shape[0], 2, H, W)
        sampled = sample_nodes(coord_map, r['walk'])  # (B * h, 2, H, W, K)
        for (qy, qx), coords in zip(st['queries'], st['map_coords']):
            read = sampled[:, :, qy, qx, :].permute(0, 2, 1)  # (h, K, 2) as (y, x)
            inside = ((coords[..., 0] >= 0) & (coords[..., 0] <= H - 1) & (coords[..., 1] >= 0)
                      & (coords[..., 1] <= W - 1))
            assert torch.allclose(read[inside], coords[inside], atol=1e-4)
            fractional += int(((coords[inside] - coords[inside].round()).abs() > 1e-3).any(-1).sum())
            checked += int(inside.sum())
        # (c) photo coordinates: stride * map position / scale, as (x, y)
        expected = st['map_coords'].double().numpy()[..., ::-1] * st['stride'] / scale
        np.testing.assert_allclose(st['image_coords'], expected, rtol=0, atol=1e-9)
        # the query's map pixel is the nearest to the photo point
        for (px, py), (qy, qx) in zip(points, st['queries']):
            assert (qy, qx) == (min(round(py * scale / st['stride']), H - 1), min(round(px * scale / st['stride']),
                                                                                 W - 1))
    assert checked > 60 and fractional > 0.9 * checked  # real bilinear positions, not the uniform grid
    # (d) what draw() plots is image_coords, head by head
    import matplotlib.axes
    drawn = []
    real_scatter = matplotlib.axes.Axes.scatter

    def spy(self, xs, ys, *args, **kwargs):
        drawn.append((np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), kwargs.get('marker')))
        return real_scatter(self, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, 'scatter', spy)
    photo = np.zeros((192, 256, 3), np.uint8)
    vis.draw(photo, stages, str(tmp_path / 'n.png'))
    nodes = iter(d for d in drawn if d[2] is None)
    for st in stages:
        for coords in st['image_coords']:
            for h in range(st['num_heads']):
                xs, ys, _ = next(nodes)
                np.testing.assert_array_equal(xs, coords[h, :, 0])
                np.testing.assert_array_equal(ys, coords[h, :, 1])
    assert next(nodes, None) is None
    assert (tmp_path / 'n.png').stat().st_size > 10000


@pytest.mark.slow  # the visualisation tool end to end on the photo
def test_visualize_cli_on_photo(vis, photo, tmp_path):
    out = tmp_path / 'nodes.png'
    path, stages = vis.main([str(ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py'), '--img', photo,
                             '--points', '250,200', '--zoom', '3', '--max-size', '256', '--out', str(out)])
    assert path == str(out) and out.stat().st_size > 20000
    assert [s['map_coords'].shape for s in stages] == [(1, 1, 9, 2), (1, 2, 9, 2), (1, 5, 9, 2), (1, 8, 9, 2)]
    from PIL import Image
    assert Image.open(out).size[0] > 1000
    with pytest.raises(SystemExit):
        vis.parse_args(['cfg.py', '--img', photo, '--points', '3;4'])
    with pytest.raises(ValueError, match='outside'):
        vis.main([str(ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py'), '--img', photo,
                  '--points', '5000,1', '--out', str(out)])
    with pytest.raises(TypeError, match='DGMN2 backbone'):
        vis.find_dgmn2(torch.nn.Linear(1, 1))


def test_image_demo_classification(photo, tmp_path):
    demo = load_tool('tools/demo/image_demo.py')
    codebase, out = demo.run(str(ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py'), photo,
                             out_dir=str(tmp_path), device='cpu')
    assert codebase == 'mmpretrain' and out == str(tmp_path / 'vis' / 'grace_hopper.png')
    from PIL import Image
    assert Image.open(out).size == (512, 600)
    with pytest.raises(SystemExit):
        demo.parse_args(['cfg.py', 'a.pth', 'b.pth', photo])
    with pytest.raises(SystemExit):
        demo.parse_args(['cfg.py', str(tmp_path / 'missing.jpg')])


@pytest.mark.slow
@pytest.mark.parametrize('config,codebase', [
    ('configs/mmdet/demo/mask-rcnn_dgmn2-tiny_fpn_synthetic.py', 'mmdet'),
    ('configs/mmseg/demo/fpn_dgmn2-tiny_synthetic.py', 'mmseg'),
])
def test_image_demo_dense(photo, tmp_path, config, codebase):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, str(ROOT / 'tools/demo/image_demo.py'), str(ROOT / config), photo,
                          '--out-dir', str(tmp_path), '--device', 'cpu'], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / 'vis' / 'grace_hopper.jpg'
    assert res.stdout.strip().splitlines()[-1] == f'{codebase}: {out}'
    from PIL import Image
    assert Image.open(out).size == (512, 600)
