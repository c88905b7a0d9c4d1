"""tools/analysis_tools/{get_flops,benchmark,dit_flops,benchmark_dit_skipping}.py: the command lines (the
counting and timing they call are tested through dgmn_mm.analysis in tests/test_analysis)."""
import os.path as osp
import runpy

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool_main(name):
    """The ``main`` of a command-line tool (its module run without ``__main__``)."""
    path = osp.join(REPO, 'tools', 'analysis_tools', f'{name}.py')
    return runpy.run_path(path, run_name=f'dgmn_tool_{name}')['main']


GET_FLOPS_MAIN = _tool_main('get_flops')


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'configs/mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py',
    'configs/mmdet/dgmn2/deformable-detr_dgmn2-tiny_8xb2-50e_coco.py',
    'configs/mmseg/dgmn2/setr-mla_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py',
])
def test_get_flops_cli_on_downstream_configs(config, capsys, tmp_path):
    """The tool runs on detectors and segmentors (small input) and prints params and FLOPs."""
    out_json = tmp_path / 'flops.json'
    res = GET_FLOPS_MAIN([osp.join(REPO, config), '--shape', '64', '96', '--no-pad', '--breakdown',
                          '--cfg-options', 'model.backbone.norm_cfg.type=BN', '--json', str(out_json)])
    text = capsys.readouterr().out
    assert 'Params:' in text and 'FLOPs (impl, MACs)' in text and 'bilinear node sampling' in text
    assert res['input_shape'] == (1, 3, 64, 96)
    assert res['categories']['rest'] > 0 and res['categories']['sampling'] > 0
    assert out_json.exists()


def test_benchmark_tool_runs(capsys):
    config = osp.join(REPO, 'configs/mmseg/dgmn2/setr-naive_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py')
    res = _tool_main('benchmark')([config, '--shape', '64', '64', '--no-pad', '--warmup', '1', '--iters', '2',
                                   '--repeats', '3'])
    assert res['images_per_s'] > 0 and len(res['runs']) == 3
    assert 'images/s' in capsys.readouterr().out


def test_cli_refuses_a_bad_convention(capsys):
    with pytest.raises(SystemExit):
        GET_FLOPS_MAIN(['some_config.py', '--convention', 'fvcore'])
    assert "invalid choice: 'fvcore'" in capsys.readouterr().err


@pytest.mark.slow
def test_dit_flops_cli_on_synthetic_images(capsys):
    """dit_flops.py averages the hard-gate FLOPs of a DiT classifier over random images (no dataset)."""
    config = osp.join(REPO, 'configs/mmpretrain/dit/dit-b1_8xb128_in1k.py')
    stats = _tool_main('dit_flops')([config, '--synthetic', '64', '64', '--num-images', '2'])
    text = capsys.readouterr().out
    assert stats['num_images'] == 2 and 0 < stats['min'] <= stats['mean'] <= stats['max'] <= stats['dense']
    assert '2 images, hard gates' in text and f"all gates open: {stats['dense'] / 1e9:.3f}" in text


def test_benchmark_dit_skipping_cli(capsys):
    rows = _tool_main('benchmark_dit_skipping')(['--arch', 'b1', '--size', '32', '--fractions', '0', '0.5',
                                                 '--runs', '1', '--warmup', '0', '--threads', '1'])
    assert [r['fraction'] for r in rows] == [0.0, 0.5] and rows[1]['gflops'] < rows[0]['gflops']
    assert 'DiT-B1 (random row gates, column gates open), batch 1, 32x32' in capsys.readouterr().out
