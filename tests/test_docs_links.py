"""Every relative link and picture in the user docs points to a file of the repository."""
import glob
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _docs():
    pages = ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=REPO_ROOT))
    pages += sorted(glob.glob('configs/**/README.md', root_dir=REPO_ROOT, recursive=True))
    return pages


def _relative_targets(page):
    with open(os.path.join(REPO_ROOT, page), encoding='utf-8') as f:
        text = f.read()
    for target in LINK.findall(text):
        if re.match(r'^[a-z]+:', target) or target.startswith('#'):
            continue  # web links and anchors in the same page
        yield target.split('#')[0]


def test_link_pattern_finds_links_and_pictures():
    found = LINK.findall('see [a](docs/x.md#y), ![pic](images/p.png) and [web](https://e.org)')
    assert found == ['docs/x.md#y', 'images/p.png', 'https://e.org']


@pytest.mark.parametrize('page', _docs())
def test_relative_links_resolve(page):
    base = os.path.dirname(os.path.join(REPO_ROOT, page))
    missing = [t for t in _relative_targets(page) if not os.path.exists(os.path.normpath(os.path.join(base, t)))]
    assert not missing, f'{page} links to missing files: {missing}'


def test_the_docs_are_found():
    pages = _docs()
    assert 'README.md' in pages and 'docs/performance.md' in pages
    assert any(p.startswith('configs/mmdet/dgmn2/') for p in pages)
    assert len(list(_relative_targets('README.md'))) >= 10  # the README links the docs and family READMEs
