"""dgmn_mm.analysis.model_benchmark: DGMN2-Tiny vs PVTv2-b1 model pairs (the timing runs in
tests/test_models/test_layers/test_training_path.py through the command line)."""
import os.path as osp
import runpy

import pytest

import dgmn_mm  # noqa: F401
from dgmn_mm.analysis import BACKBONES, MODEL_NAMES, load_pair_config, pairs_table, run_pairs
from dgmn_mm.analysis.model_benchmark import CONFIGS, config_root

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_pair_configs_differ_only_in_the_backbone():
    """The PVTv2-b1 twin of each model keeps the DGMN2 model's neck and heads; only the backbone differs."""
    assert all(osp.isfile(osp.join(config_root(), path)) for path in CONFIGS.values())
    for model in MODEL_NAMES:
        d, p = load_pair_config(model, 'dgmn2-tiny'), load_pair_config(model, 'pvtv2-b1')
        assert d.model.backbone.type == 'DGMN2' and p.model.backbone.type.endswith('PyramidVisionTransformerV2')
        assert p.model.backbone.embed_dims == 64 and list(p.model.backbone.num_layers) == [2, 2, 2, 2]
        assert p.model.backbone.get('init_cfg') is None
        for key in ('neck', 'type'):
            assert d.model[key] == p.model[key], (model, key)
    with pytest.raises(ValueError, match='model must be one of'):
        load_pair_config('yolo', BACKBONES[0])
    with pytest.raises(ValueError, match='backbone one of'):
        load_pair_config('retinanet', 'resnet-50')


def test_run_pairs_refuses_bad_arguments():
    with pytest.raises(ValueError, match='models must be names of'):
        run_pairs(models=['yolo'])
    with pytest.raises(ValueError, match='modes must be names of'):
        run_pairs(models=['retinanet'], modes=['export'])
    with pytest.raises(ValueError, match='train_batch and runs must be >= 1'):
        run_pairs(models=['retinanet'], runs=0)


def test_pairs_table_puts_the_backbones_side_by_side():
    rows = [dict(model='retinanet', backbone=b, mode='infer', height=128, width=160, batch=1, ms_median=ms,
                 ms_min=ms, ms_max=ms, images_per_s=1e3 / ms) for b, ms in (('dgmn2-tiny', 100.), ('pvtv2-b1', 250.))]
    rows += [dict(model='semantic-fpn', backbone='dgmn2-tiny', mode='train', height=64, width=64, batch=2,
                  ms_median=900., ms_min=900., ms_max=900., images_per_s=2.2)]  # no twin: not in the table
    lines = pairs_table(rows).splitlines()
    assert len(lines) == 3
    assert lines[2] == '| retinanet | infer | 128x160 (1) | 10.000 img/s (100 ms) | 4.000 img/s (250 ms) | 2.50x |'


def test_cli_refuses_an_unknown_model(capsys):
    main = runpy.run_path(osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_models.py'),
                          run_name='dgmn_tool_benchmark_models')['main']
    with pytest.raises(SystemExit):
        main(['--models', 'yolo'])
    assert '--models must be a comma list of' in capsys.readouterr().err
