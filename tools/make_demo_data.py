#!/usr/bin/env python
"""Write the synthetic demo datasets (no download): ``python tools/make_demo_data.py --out data/demo --seed 0``.

Skips the work when ``<out>/demo_data.json`` shows the same seed and sizes were already written.
"""
import argparse
import time

from dgmn_mm.demo_data import DEFAULT_SIZES, make_demo_data


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/demo', help='output directory (default: data/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='rewrite even if already present')
    parser.add_argument('--parts', nargs='+', default=['coco', 'cityscapes', 'imagenet'],
                        choices=['coco', 'cityscapes', 'imagenet'])
    for key, value in DEFAULT_SIZES.items():
        parser.add_argument('--' + key.replace('_', '-'), type=int, default=value, dest=key,
                            help=f'(default: {value})')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    make_demo_data(args.out, args.seed, force=args.force, parts=args.parts,
                   sizes={k: getattr(args, k) for k in DEFAULT_SIZES})
    print(f'done in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
