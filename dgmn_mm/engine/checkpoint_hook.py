"""Crash-safe checkpoints: mmengine's ``CheckpointHook`` with atomic saves and a resume that skips bad files.

mmengine 0.10.7's ``CheckpointHook`` deletes the checkpoints beyond ``max_keep_ckpts`` *before* it writes
the new one, and writes the new one in place under its final name. A kill during the save (out of
memory, a pre-empted job, ``kill -9``) can therefore leave only a truncated file, with ``last_checkpoint``
naming a deleted one, and ``--resume`` fails. :class:`AtomicCheckpointHook` changes only the order of the
file operations of a save:

1. the checkpoint is written to a temporary name in the same directory (``.iter_4.pth.tmp``), flushed
   and ``fsync``-ed;
2. it is renamed to its final name (``os.replace``, atomic on POSIX file systems) and the directory is
   ``fsync``-ed, so the final name only ever holds a complete file;
3. ``last_checkpoint`` is replaced the same way (temporary file, fsync, rename), only after step 2;
4. only then are the checkpoints beyond ``max_keep_ckpts`` deleted.

On an auto-resume (``--resume`` without a path: ``runner._resume`` with no ``load_from``) the hook checks,
before the runner loads anything, that the checkpoint ``last_checkpoint`` names is a complete file; if it
is missing or unreadable, the newest complete ``filename_tmpl`` checkpoint of the directory is used instead,
with a warning. Everything else (intervals, ``save_best``, ``published_keys``, remote back-ends) is
mmengine's: on a non-local back-end the hook falls back to mmengine's order of operations.
"""
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from ..registry import HOOKS

__all__ = ['AtomicCheckpointHook', 'is_complete_checkpoint', 'find_resumable_checkpoint', 'atomic_write_text']

TMP_SUFFIX = '.tmp'


def _fsync_path(path: str) -> None:
    """``fsync`` a file or a directory (a directory's fsync makes a rename in it durable)."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) if osp.isdir(path) else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: temporary file, fsync, ``os.replace``, fsync dir."""
    tmp = osp.join(osp.dirname(path), f'.{osp.basename(path)}{TMP_SUFFIX}')
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(osp.dirname(path) or '.')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete checkpoint: a file ``torch.save`` finished writing.

    ``torch.save`` writes a zip archive whose central directory comes last and whose members carry CRC-32
    checksums, so a truncated or corrupted file fails :meth:`zipfile.ZipFile.testzip` (every byte is read
    once; nothing is unpickled). A directory (DeepSpeed/FSDP sharded checkpoints) counts as complete if it
    exists. Legacy (non-zip) ``torch.save`` files are accepted if they are not empty.
    """
    if osp.isdir(path):
        return True
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    try:
        with open(path, 'rb') as f:
            magic = f.read(4)
        if magic != b'PK\x03\x04':  # the legacy pickle format (``_use_new_zipfile_serialization=False``)
            return True
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def _checkpoints_newest_first(directory: str, filename_tmpl: str) -> List[str]:
    """The files of ``directory`` matching ``filename_tmpl`` (e.g. ``iter_{}.pth``), highest step first."""
    if not osp.isdir(directory):
        return []
    head, _, tail = filename_tmpl.partition('{}')
    pattern = re.compile(re.escape(head) + r'(\d+)' + re.escape(tail) + r'$')
    found = []
    for name in os.listdir(directory):
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), osp.join(directory, name)))
    return [path for _, path in sorted(found, reverse=True)]


def find_resumable_checkpoint(work_dir: str, filename_tmpls=('iter_{}.pth', 'epoch_{}.pth'),
                              out_dir: Optional[str] = None) -> Optional[str]:
    """The checkpoint an auto-resume should load: the one ``work_dir/last_checkpoint`` names if it is
    complete (:func:`is_complete_checkpoint`), else the newest complete checkpoint of ``out_dir``
    (defaults to ``work_dir``) or of the directory ``last_checkpoint`` points into, with a warning;
    ``None`` when there is none.
    """
    save_file = osp.join(work_dir, 'last_checkpoint')
    last = None
    if osp.isfile(save_file):
        with open(save_file, encoding='utf-8') as f:
            last = f.read().strip() or None
    if last is not None and is_complete_checkpoint(last):
        return last
    directories = [d for d in (out_dir, osp.dirname(last) if last else None, work_dir) if d]
    candidates = []
    for directory in dict.fromkeys(directories):
        for tmpl in filename_tmpls:
            candidates += _checkpoints_newest_first(directory, tmpl)
    # a later save has a later modification time (steps of different templates do not compare)
    candidates.sort(key=osp.getmtime, reverse=True)
    for path in candidates:
        if is_complete_checkpoint(path):
            why = (f'the latest checkpoint {last!r} (named in {save_file}) is missing or incomplete'
                   if last is not None else f'{save_file} is missing')
            print_log(f'Resuming from {path}, the newest complete checkpoint: {why}.', logger='current',
                      level=30)
            return path
    if last is not None:
        print_log(f'The latest checkpoint {last!r} (named in {save_file}) is missing or incomplete and no '
                  f'complete checkpoint was found: training starts from scratch.', logger='current', level=30)
    return None


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` whose saves survive a kill at any moment.

    Same arguments as ``mmengine.hooks.CheckpointHook`` (``interval``, ``by_epoch``, ``max_keep_ckpts``,
    ``save_best``, ...). Differences, on a local file system:

    - a checkpoint is written to ``.<name>.tmp`` in the output directory, flushed, ``fsync``-ed and renamed
      to ``<name>``: a checkpoint file under its final name is always complete;
    - ``last_checkpoint`` is updated (atomically) only after that rename;
    - checkpoints beyond ``max_keep_ckpts`` are deleted only after the new one is complete and named in
      ``last_checkpoint``;
    - on an auto-resume, a missing or incomplete latest checkpoint is skipped, with a warning, for the newest
      complete one (:func:`find_resumable_checkpoint`); left-over ``.tmp`` files are deleted.

    A kill during a save thus loses at most the checkpoint being written. ``save_best`` checkpoints keep
    mmengine's behaviour (they are not used to resume).
    """

    def before_run(self, runner) -> None:
        """Pick a complete checkpoint for an auto-resume, before ``Runner.load_or_resume`` reads
        ``last_checkpoint``."""
        super().before_run(runner)
        if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
            out_dir = None
            if self.out_dir is not None:
                out_dir = osp.join(self.out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
            last = None
            save_file = osp.join(runner.work_dir, 'last_checkpoint')
            if osp.isfile(save_file):
                with open(save_file, encoding='utf-8') as f:
                    last = f.read().strip() or None
            if last is None or not is_complete_checkpoint(last):
                found = find_resumable_checkpoint(
                    runner.work_dir, filename_tmpls=(self.filename_tmpl, 'iter_{}.pth', 'epoch_{}.pth'),
                    out_dir=out_dir)
                if found is not None:
                    runner._load_from = found
                elif last is not None:  # mmengine would raise FileNotFoundError on the named file
                    runner._resume = False

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and self._is_local() and osp.isdir(self.out_dir):
            for name in os.listdir(self.out_dir):
                if name.startswith('.') and name.endswith(TMP_SUFFIX):
                    os.remove(osp.join(self.out_dir, name))
            # finish the deletions of a save that was killed after its checkpoint was complete: with a
            # keep limit, checkpoints older than the newest kept one and not kept themselves are stale
            if self.max_keep_ckpts > 0 and len(self.keep_ckpt_ids) > 0:
                kept, newest = set(self.keep_ckpt_ids), max(self.keep_ckpt_ids)
                head, _, tail = self.filename_tmpl.partition('{}')
                pattern = re.compile(re.escape(head) + r'(\d+)' + re.escape(tail) + r'$')
                for name in os.listdir(self.out_dir):
                    match = pattern.match(name)
                    if match and int(match.group(1)) < newest and int(match.group(1)) not in kept:
                        os.remove(osp.join(self.out_dir, name))

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        # the step bookkeeping of mmengine (recorded in the checkpoint's message hub), deletions postponed
        to_remove = []
        if self.max_keep_ckpts > 0 and not (len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                to_remove.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        tmp_filename = f'.{ckpt_filename}{TMP_SUFFIX}'
        runner.save_checkpoint(  # writes on the main process only
            self.out_dir, tmp_filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        self._commit(osp.join(self.out_dir, tmp_filename), self.last_ckpt)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old_step in to_remove:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if osp.isfile(path):
                os.remove(path)
            elif osp.isdir(path):
                self.file_backend.rmtree(path)

    @staticmethod
    def _commit(tmp_path: str, final_path: str) -> None:
        """fsync the written temporary file, rename it to its final name, fsync the directory."""
        if osp.isdir(tmp_path):  # sharded checkpoints are directories: rename only
            os.replace(tmp_path, final_path)
        else:
            with open(tmp_path, 'rb+') as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, final_path)
        _fsync_path(osp.dirname(final_path) or '.')
